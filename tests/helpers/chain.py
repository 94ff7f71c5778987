"""On-chain set-up the tests share: an anvil node with the contracts, funded fresh accounts, published
assets, agents with a spend permission, and the check that a call reverted with a given Solidity error."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from marketplace.chain import Chain, ContractRevert, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units

#: The chain backends every chain test runs on (``marketplace.chain.connect`` targets).
BACKENDS = ("embedded", "anvil")


@contextmanager
def anvil_market() -> Iterator[tuple[Chain, Deployment, Market]]:
    """A fresh anvil node with every contract deployed by dev account 0; always stopped at the end."""
    chain = connect("anvil")
    try:
        deployment = deploy_all(chain, chain.accounts[0])
        yield chain, deployment, deployment.market(chain)
    finally:
        chain.close()


def next_second() -> None:
    """Wait for the wall clock's next second: a new chain's genesis (timestamped at start) then differs."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


def expect_revert(error: str, fn, *args, **kwargs) -> ContractRevert:
    """Run ``fn`` and return the ContractRevert it raised, checking the Solidity error name."""
    with pytest.raises(ContractRevert) as info:
        fn(*args, **kwargs)
    assert info.value.error == error, str(info.value)
    return info.value


def fund(chain: Chain, market: Market, tusd: str | int = 100) -> LocalAccount:
    """A fresh account with 1 ETH for gas and ``tusd`` TestUSD."""
    account = Account.create()
    chain.send_eth(chain.accounts[0], account.address, 10**18)
    if tusd:
        market.token.mint(chain.accounts[0], account.address, to_units(tusd))
    return account


def owned_agent(chain: Chain, market: Market, owner: LocalAccount, wallet: LocalAccount, allowance: int) -> int:
    """Register an agent of ``owner`` acting from ``wallet`` (bound by its signature), allowed to pull ``allowance``
    base units of tUSD a day from the owner (approved); returns its agent id."""
    agent_id = market.agents.register(owner, "")
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(wallet, agent_id, owner.address, deadline)
    market.agents.set_agent_wallet(owner, agent_id, wallet.address, deadline, binding.packed)
    market.agents.grant_spend_permission(owner, agent_id, market.token.address, allowance, 86_400,
                                         wallet=wallet.address)  # fmt: skip
    market.token.approve(owner, market.agents.address, max(allowance, to_units(100)))
    return agent_id


def publish_model(market: Market, owner: LocalAccount, price: int) -> int:
    return market.marketplace.publish(owner, kind=AssetKind.MODEL, content_hash=os.urandom(32), uri="model",
                                      price=price, token=market.token.address,
                                      payees=[(owner.address, 10_000)])  # fmt: skip


def publish(market, owner, uri, price, *, kind=AssetKind.DATASET, payees=None, parents=(), license_duration=0):
    return market.marketplace.publish(
        owner, kind=kind, content_hash=hashlib.sha256(uri.encode()).digest(), uri=uri, price=price,
        token=market.token.address, payees=payees or [(owner.address, 10_000)], parents=list(parents),
        license_duration=license_duration,
    )  # fmt: skip
