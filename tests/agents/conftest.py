"""Fixtures of the agent tests: bob's dataset and model on chain, and the API in-process serving the model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from tests.helpers.agents import DATA_PRICE, MODEL_PRICE, adder


@pytest.fixture
def assets(market, bob) -> dict[str, int]:
    """A dataset (2 tUSD) and a model (0.25 tUSD a call) published by bob on chain."""

    def publish(kind: AssetKind, price: int, tag: bytes) -> int:
        return market.marketplace.publish(
            bob, kind=kind, content_hash=tag * 32, uri=f"ipfs://{tag.hex()}", price=price,
            token=market.token.address, payees=[(bob.address, 10_000)],
        )  # fmt: skip

    return {
        "data": publish(AssetKind.DATASET, DATA_PRICE, b"\x01"),
        "model": publish(AssetKind.MODEL, MODEL_PRICE, b"\x02"),
    }


@pytest.fixture
def server(chain, deployment, tmp_path, assets):
    """The API in-process, serving the model."""
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    with TestClient(create_app(settings, chain=chain, model_handlers={assets["model"]: adder})) as test_client:
        yield test_client
