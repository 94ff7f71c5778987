"""Issue 12 §2 and §6 (vouchers), attacked over real HTTP: every answered call is claimed, exactly, and no more.

A real anvil node (one for the module) and the marketplace app under uvicorn on 127.0.0.1, with a
model whose handler fails on bad input. The payer is hostile and signs vouchers by hand. Each test
asserts the exact amount the model's vault received on chain once the server's own settler ran:

- pay ahead: the same voucher for 10·P + 1 on every call, or one call ahead each time;
- 5 good calls, then 8 concurrent calls with bad input (debited, then released), several rounds;
- a second gateway with an empty data directory, asked again for a voucher the first claimed;
- the asset owner's close, then calls; the chain clock past the expiry, then calls;
- vouchers from an ERC-1271 contract signer, an EIP-7702-delegated signer, and a high-s signature.

And the client's side (§6, voucher half): pointed at a fake gateway that asks for the whole deposit,
the SDK, an agent wallet and the CLI refuse in one line and never sign more than one call's price.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from agents import AgentWallet, AuditLedger, Budget
from agents.errors import PaymentRefused
from agents.wallet import ChannelState
from marketplace.api import Settings, create_app
from marketplace.api.relayer import SETTLEMENT_KEY_FILE
from marketplace.chain import Chain, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import MarketplaceClient
from marketplace.errors import AgentmarketError
from marketplace.protocol.vouchers import HEADER, Voucher, VoucherHasher
from marketplace.wallet_file import create_wallet, encryption_keypair
from tests.helpers.cli import run_cli
from tests.helpers.servers import serving

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
HOUR = 3600
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def adder(payload: Any) -> dict[str, float]:
    """The served model: adds its inputs; anything but numbers is bad input (422, not charged)."""
    return {"sum": sum(float(x) for x in payload)}


@dataclass
class Live:
    """The module's chain, contracts, model and live server."""

    chain: Chain
    deployment: Deployment
    market: Market
    model: int
    url: str
    app: FastAPI
    home: Path
    hasher: VoucherHasher

    @property
    def vault(self) -> int:
        return self.market.token.balance_of(self.market.marketplace.vault_of(self.model))

    def settle(self, app: FastAPI | None = None) -> None:
        """One round of the live server's own settler (its background round is hours away in these tests)."""
        (app or self.app).state.services.settler.settle_once()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    chain = connect("anvil")
    try:
        admin, owner = chain.accounts[0], chain.accounts[2]
        deployment = deploy_all(chain, admin)
        market = deployment.market(chain)
        model = market.marketplace.publish(owner, kind=AssetKind.MODEL, content_hash=os.urandom(32), uri="adder",
                                           price=PRICE, token=market.token.address,
                                           payees=[(owner.address, 10_000)])  # fmt: skip
        home = tmp_path_factory.mktemp("channel-attacks")
        app = _app(deployment, chain, home / "server-a", model)
        with serving(app) as url:
            yield Live(chain, deployment, market, model, url, app, home, VoucherHasher(market.channels.domain))
    finally:
        chain.close()


def _app(deployment: Deployment, chain: Chain, data_dir: Path, model: int, relayer_key: str | None = None) -> FastAPI:
    settings = Settings(manifest=deployment.save(data_dir / "deployment.json"), data_dir=data_dir,
                        settle_interval=3600, chain_poll_interval=0.2,
                        relayer_key=SecretStr(relayer_key) if relayer_key else None)  # fmt: skip
    return create_app(settings, chain=chain, model_handlers={model: adder})


@pytest.fixture
def payer(live: Live) -> LocalAccount:
    """A fresh payer with gas and 100 tUSD, its deposits approved."""
    account = Account.create()
    live.chain.send_eth(live.chain.accounts[0], account.address, 10**18)
    live.market.token.mint(live.chain.accounts[0], account.address, to_units(100))
    live.market.token.approve(account, live.market.channels.address, to_units(100))
    return account


def _open(live: Live, payer: LocalAccount, deposit: int, signer: str | None = None, seconds: int = HOUR) -> int:
    receiver = httpx.get(f"{live.url}/v1/payments", timeout=10).json()["payment_channel"]["receiverAuthorizer"]
    expiry = live.chain.timestamp() + seconds
    return live.market.channels.open(payer, live.model, live.market.token.address, deposit, expiry, signer,
                                     receiver_authorizer=receiver)  # fmt: skip


def _invoke(url: str, live: Live, header: str, payload: Any = (1, 2)) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{live.model}/invoke", json={"input": list(payload)}, headers={HEADER: header},
                      timeout=30)  # fmt: skip


def _voucher(live: Live, signer: LocalAccount, channel: int, ceiling: int) -> str:
    return live.hasher.voucher(signer, channel, ceiling).to_header()


def _until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------- §2: the vault gets exactly what was served


@pytest.mark.parametrize("ahead", ["the same voucher every call", "one call ahead each time"])
def test_paying_ahead_is_charged_for_the_answered_calls(live, payer, ahead):
    deposit = 10 * PRICE + 1
    channel, vault = _open(live, payer, deposit), live.vault
    for k in range(10):
        ceiling = deposit if ahead == "the same voucher every call" else (k + 1) * PRICE + 1
        answer = _invoke(live.url, live, _voucher(live, payer, channel, ceiling))
        assert answer.status_code == 200, answer.text
        assert answer.json()["payment"]["debited"] == str((k + 1) * PRICE)
    refused = _invoke(live.url, live, _voucher(live, payer, channel, deposit))
    assert (refused.status_code, refused.json()["reason"]) == (402, "deposit_exhausted")
    live.settle()
    assert live.vault - vault == 10 * PRICE  # before the fix: 0, and the payer reclaimed everything
    live.chain.time_travel(live.market.channels.channel(channel).claim_deadline)
    before = live.market.token.balance_of(payer.address)
    live.market.channels.reclaim(live.chain.accounts[0], channel)
    assert live.market.token.balance_of(payer.address) - before == 1


def test_concurrent_failing_calls_never_cost_the_answered_ones(live, payer):
    channel, vault, answered = _open(live, payer, to_units(1)), live.vault, 0
    for _round in range(3):
        for _ in range(5):
            answer = _invoke(live.url, live, _voucher(live, payer, channel, answered + PRICE))
            assert answer.status_code == 200, answer.text
            answered += PRICE
        headers = [_voucher(live, payer, channel, answered + k * PRICE) for k in range(1, 9)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(_bad_input_at_once(live, 8), headers))
        assert statuses == [422] * 8
        live.settle()
        assert live.vault - vault == answered  # before the fix: sometimes 0
    assert live.market.channels.channel(channel).claimed == answered == 15 * PRICE


def _bad_input_at_once(live: Live, calls: int):
    start = threading.Barrier(calls)

    def bad_input(header: str) -> int:
        start.wait()
        return _invoke(live.url, live, header, payload=["not a number"]).status_code

    return bad_input


def test_a_second_gateway_with_an_empty_data_dir_does_not_serve_claimed_credit(live, payer):
    channel, vault = _open(live, payer, to_units(1)), live.vault
    for n in range(1, 6):
        assert _invoke(live.url, live, _voucher(live, payer, channel, n * PRICE)).status_code == 200
    live.settle()
    # The same settlement key (as AGENTMARKET_RELAYER_KEY would name it) with an empty data directory: a lost ledger.
    key = "0x" + (live.home / "server-a" / SETTLEMENT_KEY_FILE).read_bytes().hex()
    second = _app(live.deployment, live.chain, live.home / f"server-b-{channel}", live.model, relayer_key=key)
    with serving(second) as url:
        again = _invoke(url, live, _voucher(live, payer, channel, 5 * PRICE))  # "5 more calls" for a claimed voucher
        assert (again.status_code, again.json()["reason"]) == (402, "insufficient_voucher")
        assert again.json()["requirements"]["channel"]["minMaxClaimableAmount"] == str(6 * PRICE)
        assert _invoke(url, live, _voucher(live, payer, channel, 6 * PRICE)).status_code == 200
    # leaving stopped the second gateway: its settler claimed the one call it answered
    assert live.vault - vault == 6 * PRICE
    # and the first gateway learns of that claim from the chain (within its poll interval): 6·P is spent there too
    time.sleep(1.0)
    spent = _invoke(live.url, live, _voucher(live, payer, channel, 6 * PRICE))
    assert (spent.status_code, spent.json()["reason"]) == (402, "insufficient_voucher")
    assert _invoke(live.url, live, _voucher(live, payer, channel, 7 * PRICE)).status_code == 200
    live.settle()
    assert live.vault - vault == 7 * PRICE


def test_calls_stop_at_the_owners_close_and_the_answered_ones_are_claimed(live, payer):
    channel, vault = _open(live, payer, to_units(1)), live.vault
    header = _voucher(live, payer, channel, 50 * PRICE)  # paid far ahead
    answered = sum(_invoke(live.url, live, header).status_code == 200 for _ in range(4))
    assert answered == 4
    live.market.channels.close(live.chain.accounts[2], channel)
    statuses = []

    def refused() -> bool:
        statuses.append(_invoke(live.url, live, header).status_code)
        return statuses[-1] == 402

    _until(refused, "the gate sees the close (chain_poll_interval 0.2 s)")
    answered += statuses.count(200)  # any call answered before the watcher saw the close is still paid for
    assert _invoke(live.url, live, header).json()["reason"] == "channel_expired"
    _until(lambda: live.vault - vault == answered * PRICE, "the settler, woken by the close, claims")
    assert live.market.channels.channel(channel).claimed == answered * PRICE


def test_calls_stop_when_the_chain_clock_passes_the_expiry(live, payer):
    channel, vault = _open(live, payer, to_units(1), seconds=HOUR), live.vault
    header = _voucher(live, payer, channel, 20 * PRICE)
    assert [_invoke(live.url, live, header).status_code for _ in range(3)] == [200] * 3
    live.chain.time_travel(live.market.channels.channel(channel).expiry + 30)  # the wall clock is an hour behind
    statuses = []

    def refused() -> bool:
        statuses.append(_invoke(live.url, live, header).status_code)
        return statuses[-1] == 402

    _until(refused, "the gate reads the chain's clock (chain_poll_interval 0.2 s)")
    answered = 3 + statuses.count(200)  # a call answered before the watcher's next read is still claimable
    assert _invoke(live.url, live, header).json()["reason"] == "channel_expired"
    live.settle()  # within the claim window
    assert live.vault - vault == answered * PRICE == live.market.channels.channel(channel).claimed


def test_vouchers_the_contract_would_refuse_are_refused(live, payer):
    """A contract signer that approves everything (ERC-1271), a high-s twin of a good signature, v = 0/1:
    refused by the gate as they are by the contract; an EIP-7702-delegated signer still pays with its key."""
    approving = live.chain.deploy("ApprovingSigner", sender=live.chain.accounts[0])
    by_contract = _open(live, payer, to_units(1), signer=approving.address)
    for signature in (b"\x01" * 65, live.hasher.sign(payer, by_contract, PRICE)):
        answer = _invoke(live.url, live, Voucher(by_contract, PRICE, signature).to_header())
        assert (answer.status_code, answer.json()["reason"]) == (402, "invalid_signature")

    session_key = Account.create()
    channel, vault = _open(live, payer, to_units(1), signer=session_key.address), live.vault
    good = live.hasher.sign(session_key, channel, PRICE)
    high_s = good[:32] + (SECP256K1_N - int.from_bytes(good[32:64], "big")).to_bytes(32, "big") + bytes([55 - good[64]])
    for twin in (high_s, good[:64] + bytes([good[64] - 27])):
        answer = _invoke(live.url, live, Voucher(channel, PRICE, twin).to_header())
        assert (answer.status_code, answer.json()["reason"]) == (402, "invalid_signature")

    # EIP-7702: the signer's account runs code that says yes to every ERC-1271 check
    live.chain.w3.provider.make_request("anvil_setCode", [session_key.address, "0xef0100" + approving.address[2:]])
    forged = live.hasher.sign(Account.create(), channel, PRICE)
    answer = _invoke(live.url, live, Voucher(channel, PRICE, forged).to_header())
    assert (answer.status_code, answer.json()["reason"]) == (402, "invalid_signature")
    assert _invoke(live.url, live, Voucher(channel, PRICE, good).to_header()).status_code == 200
    live.settle()
    assert live.vault - vault == PRICE


def test_payment_terms_name_the_key_that_claims(live):
    terms = httpx.get(f"{live.url}/v1/payments", timeout=10).json()["payment_channel"]
    services = live.app.state.services
    assert terms["receiverAuthorizer"] == services.relayer.address == services.settler.relayer.address
    assert (terms["channels"], terms["claimWindowSeconds"]) == (live.market.channels.address, 900)
    unpaid = httpx.post(f"{live.url}/v1/models/{live.model}/invoke", json={"input": [1]}, timeout=10)
    assert (
        unpaid.status_code == 402 and unpaid.json()["requirements"]["receiverAuthorizer"] == terms["receiverAuthorizer"]
    )


# ---------------------------------------------------------------------- §6: a client signs its own count


@pytest.fixture
def liar(live: Live) -> Iterator[tuple[str, list[int]]]:
    """A fake gateway: the real manifest and terms, and a 402 asking for a voucher of the whole deposit.

    Yields its URL and the ceilings of the vouchers it received.
    """
    fake, received = FastAPI(), []
    manifest = live.deployment.to_json()
    terms = httpx.get(f"{live.url}/v1/payments", timeout=10).json()

    @fake.get("/v1/deployment")
    def deployment() -> dict:
        return manifest

    @fake.get("/v1/payments")
    def payments() -> dict:
        return terms

    @fake.post("/v1/models/{asset_id}/invoke")
    async def invoke(asset_id: int, request: Request) -> JSONResponse:
        voucher = Voucher.from_header(request.headers[HEADER])
        received.append(voucher.max_claimable_amount)
        deposit = live.market.channels.channel(voucher.channel_id).deposit
        body = {
            "error": "payment_required",
            "detail": "pay up",
            "reason": "insufficient_voucher",
            "requirements": {"channel": {"channelId": voucher.channel_id, "minMaxClaimableAmount": str(deposit)}},
        }
        return JSONResponse(body, status_code=402)  # fmt: skip

    with serving(fake) as url:
        yield url, received


def test_a_lying_gateway_gets_no_more_than_one_call_signed(live, payer, liar, tmp_path, monkeypatch):
    url, received = liar
    deposit = to_units(5)
    channel = _open(live, payer, deposit)
    client = MarketplaceClient.connect(url, payer, live.chain, encryption_key=bytes(encryption_keypair(payer)))
    with pytest.raises(AgentmarketError) as sdk:
        client.invoke(live.model, [1], channel_id=channel)
    assert str(sdk.value) == (
        f"the server asks for a voucher of {deposit} on channel {channel}, but this client counted 0 answered "
        f"+ {PRICE} for this call = {PRICE}: refusing to sign more"
    )

    wallet = AgentWallet(client, Budget(run_cap=deposit, asset_cap=deposit, call_ceiling=PRICE),
                         AuditLedger(tmp_path / "audit.jsonl"))  # fmt: skip
    wallet.channels[channel] = ChannelState(live.model, deposit)
    with pytest.raises(PaymentRefused, match="refusing to sign more"):
        wallet.invoke(live.model, [1], channel)

    password = "correct horse"
    keystore = tmp_path / "payer.json"
    monkeypatch.setenv("AGENTMARKET_KEYSTORE_SCRYPT_N", "1024")
    holder = create_wallet(keystore, password)
    live.chain.send_eth(live.chain.accounts[0], holder.address, 10**18)
    live.market.token.mint(live.chain.accounts[0], holder.address, deposit)
    live.market.token.approve(holder, live.market.channels.address, deposit)
    cli_channel = _open(live, holder, deposit)
    env = {"AGENTMARKET_RPC": live.chain.rpc_url, "AGENTMARKET_SERVER": url, "AGENTMARKET_WALLET": str(keystore),
           "AGENTMARKET_PASSWORD": password, "AGENTMARKET_KEYSTORE_SCRYPT_N": "1024"}  # fmt: skip
    result = run_cli("invoke", str(live.model), "--channel", str(cli_channel), "--input", "[1]", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: the server asks for a voucher of {deposit} on channel {cli_channel}, but this client counted 0 "
        f"answered + {PRICE} for this call = {PRICE}: refusing to sign more"
    ]
    assert received and max(received) == PRICE  # nothing above one call's price was ever signed
    book = json.loads((tmp_path / "vouchers" / f"{holder.address}.json").read_text())
    ((channel_key, count),) = (item for counts in book.values() for item in counts.items())
    assert channel_key.startswith(f"{cli_channel}/payer:{holder.address}/")  # per chain and channel identity
    assert count == {"answered": "0", "signed": str(PRICE)}
