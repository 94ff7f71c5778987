"""Hostile server: the SDK signs any Sign-In with Ethereum message a server hands it, whatever site it names.

A fake gateway serves the real deployment manifest (so `MarketplaceClient.connect` accepts it, even with
the trusted manifest pinned: it *is* the real deployment). When the victim's SDK logs in to it, the fake
asks the real server for a login nonce for the victim's address, hands the real server's EIP-4361
message to the victim, and forwards the signature to the real server's /v1/auth/verify: it now holds a
bearer token for the victim's account on the real server. With it, it downloads what only the victim
may download — here a provider's own content, which the owner gets without a license, in plaintext.

EIP-4361 exists to stop exactly this: a wallet must refuse a message whose domain (and URI) is not the
site asking for the signature.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.client import MarketplaceClient
from tests.helpers.chain import anvil_market, fund
from tests.helpers.cli import free_port
from tests.helpers.servers import Reply, hostile_server, server_app, serving

pytestmark = pytest.mark.backend("anvil")

SECRET = b"rows only licensees may read: " + b"x" * 64


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple[Chain, Deployment, str]]:
    with anvil_market() as (chain, deployment, _market):
        # The real server's login domain is the 127.0.0.1:port its clients reach (as `agentmarket serve --port`).
        port = free_port()
        app = server_app(deployment, chain, tmp_path_factory.mktemp("siwe-relay"), port=port)
        with serving(app, port) as url:
            yield chain, deployment, url


def test_sdk_login_signature_cannot_be_relayed_to_another_server(env):
    chain, deployment, real = env
    market = deployment.market(chain)
    provider = fund(chain, market, 10)
    # The provider publishes its dataset on the real server (its own, honest, session).
    honest = MarketplaceClient.connect(real, provider, chain, trusted=deployment)
    asset_id = honest.publish(SECRET, price=5_000_000)

    stolen: list[str] = []

    def relay(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if method == "GET" and path == "/v1/deployment":
            return Reply(200, httpx.get(f"{real}/v1/deployment").json())
        if method == "POST" and path in ("/v1/auth/nonce", "/v1/auth/verify"):
            answer = httpx.post(f"{real}{path}", content=body, headers={"Content-Type": "application/json"})
            if path == "/v1/auth/verify" and answer.status_code == 200:
                stolen.append(answer.json()["token"])
            return Reply(answer.status_code, answer.json())
        return Reply(404, {"error": "content_not_uploaded", "detail": "try again later"})

    with hostile_server(relay) as fake:
        victim = MarketplaceClient.connect(fake, provider, chain, trusted=deployment)  # the real deployment: accepted
        with pytest.raises(Exception):  # noqa: B017 - whatever the victim sees, it is what the thief did that matters
            victim.download(asset_id)  # any authenticated call: download, upload, publish

    leaked = None
    if stolen:
        leaked = httpx.get(f"{real}/v1/assets/{asset_id}/content", headers={"Authorization": f"Bearer {stolen[0]}"})
    assert leaked is None or leaked.content != SECRET, (
        f"the fake at {fake} relayed the victim's SIWE signature to the real server and downloaded the "
        f"victim's content with the token: HTTP {leaked.status_code}, {len(leaked.content)} bytes, plaintext"
    )
    assert not stolen, (
        "the SDK signed a login message naming the real server while talking to "
        f"{fake}; the fake turned it into a bearer token on the real server"
    )
