"""The SDK, the CLI and agent wallets against gateways that lie, crash clients or lose answers (issue 12 follow-ups).

Every gateway here is a real HTTP server on 127.0.0.1:

- **Deep or huge answers**: importing py_ecc raises the recursion limit, so JSON 100,000 levels deep in any
  answer overflowed the C stack of the SDK's process; a 1 GB answer was read into memory whole.
  Expected: one bounded parser for every answer (and JSON-carrying header), one-line errors, no crash.
- **A relayed login**: the SDK signed whatever Sign-In with Ethereum message the server sent, so a
  gateway could relay another server's login (another domain), or one for another chain or account.
  Expected: the message is checked against the server the client talks to, its account and chain, and a
  short expiry before anything is signed.
- **Funding before checking**: an agent wallet pulled its owner's money under the spend permission before
  the server's 402 (or channel terms, or the asset's listing) was checked, so a lying gateway could use up
  the owner's per-period cap. Expected: check, fund, sign.
- **A lost answer**: the connection broke (or timed out) after a paid channel call was sent; the server
  had debited it, the client's count had not, and the channel refused the client from then on. Expected:
  an unknown outcome counts as answered and the next call succeeds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from agents import AgentError, AgentWallet, AuditLedger, Budget, PaymentRefused
from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient, MarketplaceReader
from marketplace.client.sdk import MAX_RESPONSE_BYTES, BadResponse, LoginRefused, ServerUnreachable
from marketplace.errors import AgentmarketError
from marketplace.siwe import SiweMessage, format_time
from tests.helpers.chain import owned_agent
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.fake_gateway import FakeGateway
from tests.helpers.scripted import DEEP, HUGE, Scripted, answer, endless
from tests.helpers.servers import serving

PRICE = to_units("0.5")


# ---------------------------------------------------------------------- deep and huge answers


def test_deep_json_in_any_answer_is_a_one_line_refusal():
    deep = answer(200, DEEP)
    routes = {"GET /v1/assets": deep, "GET /v1/assets/1": deep, "GET /v1/stats": deep, "GET /v1/agents/1": deep,
              "GET /v1/deployment": deep, "GET /v1/accounts/0x0000000000000000000000000000000000000001/earnings":
              answer(400, DEEP)}  # fmt: skip
    with Scripted(routes) as gateway, MarketplaceReader(gateway.url) as reader:
        for read in (reader.assets, lambda: reader.asset(1), reader.stats, lambda: reader.agent(1)):
            with pytest.raises(BadResponse) as refused:
                read()
            assert "answered JSON nested deeper than 256 levels; refusing to read it" in str(refused.value)
            assert "\n" not in str(refused.value)
        with pytest.raises(ApiClientError) as error:  # an error whose body is deep: its status, and a line of it
            reader.earnings("0x0000000000000000000000000000000000000001")
        assert (error.value.status, error.value.code) == (400, "error") and len(error.value.detail) <= 200


def test_a_one_gigabyte_answer_is_refused_after_a_bounded_read():
    with Scripted({}) as gateway:
        gateway.routes["GET /v1/assets"] = endless(gateway, announce=True)
        gateway.routes["GET /v1/stats"] = endless(gateway, announce=False)
        with MarketplaceReader(gateway.url) as reader:
            with pytest.raises(
                BadResponse, match=f"announced a {HUGE}-byte answer, more than the {MAX_RESPONSE_BYTES}"
            ):
                reader.assets()
            started = time.monotonic()
            with pytest.raises(BadResponse, match=f"sent more than the {MAX_RESPONSE_BYTES} bytes"):
                reader.stats()
            assert time.monotonic() - started < 30
        time.sleep(0.2)  # (the server's writer notices the hang-up)
        assert gateway.sent_bytes < 64 * 1024 * 1024  # the client stopped reading far below 1 GiB


def test_the_cli_says_one_line_when_a_gateway_answers_deep_or_endless_json():
    with Scripted({"GET /v1/assets": answer(200, DEEP)}) as gateway:
        assert_one_line_error(run_cli("asset", "ls", "--server", gateway.url), "nested deeper than 256 levels")
        gateway.routes["GET /v1/assets"] = endless(gateway, announce=False)
        assert_one_line_error(run_cli("asset", "ls", "--server", gateway.url), "stopped reading")


# ---------------------------------------------------------------------- bodies that are not the API's

ITEM = {"asset_id": 1, "kind": "dataset", "owner": "0x1", "token": "0x2", "price": "2500000", "license_duration": 0,
        "version": 1, "listed": True, "content_hash": "0x00", "uri": "u", "vault": "0x3", "parents": [],
        "content_uploaded": True}  # fmt: skip
#: For each read: an answer that is JSON but not the API's body, and the field the refusal must name.
MALFORMED = {
    "GET /v1/assets": (
        {"items": [{k: v for k, v in ITEM.items() if k != "price"}], "total": 1, "limit": 50, "offset": 0},
        "items.0.price",
    ),
    "GET /v1/assets/1": (
        {
            **ITEM,
            "payees": [],
            "children": [],
            "revenue_received": "-5",
            "licenses_sold": 0,
            "rating": {"count": 0, "average": None},
        },
        "revenue_received",
    ),
    "GET /v1/stats": (
        {
            "assets": 1,
            "agents": 0,
            "licenses_sold": 0,
            "license_volume": "0",
            "channel_volume": "0",
            "revenue_received": "0",
            "released_by_payee": {"0xabc": 7.5},
            "top_assets": [],
        },
        "released_by_payee.0xabc",
    ),
    "GET /v1/agents/1": (
        {"agent_id": 1, "owner": "0x1", "uri": "u", "wallet": None, "metadata": {"k": ["v"]}},
        "metadata.k",
    ),
    "GET /v1/accounts/0x0000000000000000000000000000000000000001/earnings": (
        {"address": "0x1", "token": "0x2", "total_claimable": "1" * 79},
        "total_claimable",
    ),
    "GET /v1/payments": (
        {
            "payment_channel": {
                "scheme": "payment-channel",
                "header": "X-Payment-Channel",
                "headerFormat": "h",
                "network": "eip155:1",
                "chainId": 1,
                "channels": "0x4",
                "claimWindowSeconds": 900,
                "minSecondsToExpiry": 60,
                "voucher": {"primaryType": "Voucher", "domain": {}, "types": {}, "maxClaimableAmount": "a ceiling"},
            },
            "models": [2],
        },
        "payment_channel",
    ),  # no receiverAuthorizer
}


def test_a_body_that_is_not_the_apis_is_bad_response_naming_the_field(chain, deployment, alice):
    """Before: the SDK returned whatever JSON came back, and callers met a KeyError (or an int() ValueError) far
    from the answer; now every answer is validated into its wire model at the boundary."""
    routes = {route: answer(200, json.dumps(body).encode()) for route, (body, _) in MALFORMED.items()}
    with Scripted(routes) as gateway:
        client = MarketplaceClient(gateway.url, alice, chain, deployment)
        reads = {
            "GET /v1/assets": client.assets, "GET /v1/assets/1": lambda: client.asset(1), "GET /v1/stats": client.stats,
            "GET /v1/agents/1": lambda: client.agent(1),
            "GET /v1/accounts/0x0000000000000000000000000000000000000001/earnings":
                lambda: client.earnings("0x0000000000000000000000000000000000000001"),
            "GET /v1/payments": client.payment_terms,
        }  # fmt: skip
        for route, read in reads.items():
            with pytest.raises(BadResponse) as refused:
                read()
            message = str(refused.value)
            assert f"({route}) answered HTTP 200 with a body that is not the API's " in message, message
            assert f": {MALFORMED[route][1]}: " in message and "\n" not in message, message
            assert refused.value.status == 200
        refused_terms = "not the API's PaymentTerms: payment_channel: receiverAuthorizer: Field required"
        with pytest.raises(BadResponse, match=refused_terms):
            client.served_models()  # the whole body is checked, not only the part a caller reads
        with pytest.raises(BadResponse, match=refused_terms):
            client.receiver_authorizer()


def test_a_login_answer_that_is_not_the_apis_is_bad_response_and_nothing_is_signed(chain, deployment, alice):
    with Scripted({"POST /v1/auth/nonce": answer(200, b'{"nonce": "n", "expires_at": 0}')}) as gateway:
        client = MarketplaceClient(gateway.url, alice, chain, deployment)
        with pytest.raises(BadResponse, match="not the API's NonceResponse: message: Field required"):
            client.login()
        assert [path for _, path, _, _ in gateway.requests] == ["/v1/auth/nonce"]  # no signature went out
    gateway = _login_gateway(lambda url: _siwe(url, alice.address))
    gateway.routes["POST /v1/auth/verify"] = answer(200, b'{"token": "t", "address": "", "expires_at": "soon"}')
    with gateway, pytest.raises(BadResponse, match="not the API's TokenResponse: expires_at: "):
        MarketplaceClient(gateway.url, alice, chain, deployment).login()


def test_the_cli_says_one_line_naming_the_field_when_a_gateway_answers_another_body():
    body, field = MALFORMED["GET /v1/assets"]
    with Scripted({"GET /v1/assets": answer(200, json.dumps(body).encode())}) as gateway:
        assert_one_line_error(run_cli("asset", "ls", "--server", gateway.url), f"not the API's AssetPage: {field}: ")


def test_a_deep_payment_required_header_is_refused_before_signing(chain, deployment, market, alice, bob):
    model = market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x0b" * 32, uri="ipfs://m", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip
    nested = base64.b64encode(b"[" * 4000 + b"]" * 4000).decode()  # fits in an HTTP head (16 KiB)
    routes = {f"POST /v1/models/{model}/invoke": answer(402, b"{}", {"PAYMENT-REQUIRED": nested}),
              "GET /v1/deployment": answer(200, DEEP)}  # fmt: skip
    with Scripted(routes) as gateway:
        with pytest.raises(BadResponse, match="nested deeper than 256"):
            MarketplaceClient.connect(gateway.url, alice, chain)
        client = MarketplaceClient(gateway.url, alice, chain, deployment)
        with pytest.raises(AgentmarketError, match="is not x402 JSON; nothing was signed"):
            client.invoke(model, [1])
        assert all("payment-signature" not in {k.lower() for k in h} for _, _, h, _ in gateway.requests)


# ---------------------------------------------------------------------- a relayed login


def _login_gateway(message: Callable[[str], str]) -> Scripted:
    """A gateway whose /v1/auth/nonce answers ``message(its own URL)`` and whose /v1/auth/verify answers a token."""
    gateway = Scripted({})

    def nonce(handler: BaseHTTPRequestHandler) -> None:
        text = message(gateway.url)
        answer(200, json.dumps({"nonce": "n0nce1234", "message": text, "expires_at": 0}).encode())(handler)

    gateway.routes["POST /v1/auth/nonce"] = nonce
    token = {"token": "t.1.x", "address": "", "expires_at": int(time.time()) + 600}
    gateway.routes["POST /v1/auth/verify"] = answer(200, json.dumps(token).encode())
    return gateway


def _siwe(base: str, address: str, **changes: Any) -> str:
    """The login message an honest server at ``base`` would send (with ``changes``)."""
    now = int(time.time())
    fields = {"domain": base.removeprefix("http://"), "address": address, "uri": base, "chain_id": 31337,
              "nonce": "n0nce1234", "issued_at": format_time(now), "expiration_time": format_time(now + 300),
              "statement": "Sign in to agentmarket."}  # fmt: skip
    fields.update(changes)
    return SiweMessage(**fields).to_text()


LIES: dict[str, tuple[Callable[[str, str, str], str], str]] = {
    # name: (message(base, own address, other address), what the refusal names)
    "another domain": (lambda b, a, o: _siwe(b, a, domain="market.example"), "domain 'market.example'"),
    "another port": (lambda b, a, o: _siwe(b, a, domain="127.0.0.1:9"), "domain '127.0.0.1:9'"),
    "another URI": (lambda b, a, o: _siwe(b, a, uri="https://market.example/login"), "URI"),
    "another scheme": (lambda b, a, o: _siwe(b, a, scheme="https"), "scheme 'https'"),
    "another chain": (lambda b, a, o: _siwe(b, a, chain_id=1), "chain id 1"),
    "another account": (lambda b, a, o: _siwe(b, o), "signs in"),
    "valid for two days": (
        lambda b, a, o: _siwe(b, a, expiration_time=format_time(time.time() + 2 * 86_400)),
        "valid for",
    ),
    "never expires": (lambda b, a, o: _siwe(b, a, expiration_time=None), "no Expiration Time"),
    "expired": (
        lambda b, a, o: _siwe(
            b, a, issued_at=format_time(time.time() - 600), expiration_time=format_time(time.time() - 300)
        ),
        "expired",
    ),
    "capabilities": (lambda b, a, o: _siwe(b, a, resources=("urn:recap:eyJhdHQiOnt9fQ",)), "Resources"),
    "not a login": (lambda b, a, o: "Please sign: transfer everything", "not a Sign-In with Ethereum message"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_login_for_another_server_chain_or_account_is_not_signed(chain, deployment, alice, bob, lie):
    make, named = LIES[lie]
    with _login_gateway(lambda base: make(base, alice.address, bob.address)) as gateway:
        client = MarketplaceClient(gateway.url, alice, chain, deployment)
        with pytest.raises(LoginRefused) as refused:
            client.login()
    message = str(refused.value)
    assert message.startswith(f"refused to sign the login message from {gateway.url}: ") and "\n" not in message
    assert named in message and message.endswith("nothing was signed")
    assert gateway.received("POST", "/v1/auth/verify") == []  # no signature left this process


def test_an_honest_login_is_signed_and_sent(chain, deployment, alice):
    with _login_gateway(lambda base: _siwe(base, alice.address)) as gateway:
        client = MarketplaceClient(gateway.url, alice, chain, deployment)
        assert client.login() == "t.1.x"
    (sent,) = gateway.received("POST", "/v1/auth/verify")
    body = json.loads(sent)
    assert Account.recover_message(encode_defunct(text=body["message"]), signature=body["signature"]) == alice.address


# ---------------------------------------------------------------------- agent wallets: check, fund, sign


@pytest.fixture
def funded_by_owner(chain, market, alice):
    """An agent holding no tUSD whose owner (alice) lets it pull 3 tUSD a day: ``make(tmp_path)`` sets it up
    and returns ``connect(url)``, its wallet paying through a client of the server at ``url`` (one budget and
    ledger for all of them)."""

    def make(tmp_path) -> Callable[[str], AgentWallet]:
        key = Account.create()
        chain.send_eth(chain.accounts[0], key.address, 10**18)
        agent_id = owned_agent(chain, market, alice, key, to_units(3))
        budget = Budget(run_cap=to_units(100), asset_cap=to_units(100), call_ceiling=to_units(10))
        ledger = AuditLedger(tmp_path / "ledger.jsonl")
        return lambda url: AgentWallet.connect(key, budget, ledger, url, chain, agent_id=agent_id)

    return make


def _dataset(market, owner, tag: bytes, *, listed: bool = True) -> int:
    return market.marketplace.publish(
        owner, kind=AssetKind.DATASET, content_hash=tag * 32, uri=f"ipfs://{tag.hex()}", price=PRICE,
        token=market.token.address, payees=[(owner.address, 10_000)], listed=listed,
    )  # fmt: skip


def _nothing_pulled(market, wallet: AgentWallet) -> None:
    assert market.agents.spend_permission(wallet.agent_id, market.token.address).spent_in_period == 0
    assert market.token.balance_of(wallet.address) == 0
    assert [e.kind for e in wallet.ledger.entries()] == []


def test_a_lying_402_uses_none_of_the_owners_cap(chain, deployment, market, bob, carol, funded_by_owner, tmp_path):
    connect = funded_by_owner(tmp_path)
    asset = _dataset(market, bob, b"\x0c")

    def lie(required: dict) -> dict:
        required["accepts"][0] |= {"payTo": carol.address, "amount": str(950 * PRICE)}
        return required

    with FakeGateway(chain, deployment, carol, lie) as fake:
        wallet = connect(fake.url)
        with pytest.raises(PaymentRefused, match="payTo"):
            wallet.buy_over_x402(asset)
        assert fake.signatures == []
    _nothing_pulled(market, wallet)

    # Terms that match the chain: funded (exactly the price), then signed. (This fake answers no content:
    # the payment counts, and the wallet says so.)
    with FakeGateway(chain, deployment, carol, lambda required: required) as fake:
        wallet = connect(fake.url)
        with pytest.raises(AgentError, match="not delivered"):
            wallet.buy_over_x402(asset)
        assert len(fake.signatures) == 1
    assert market.agents.spend_permission(wallet.agent_id, market.token.address).spent_in_period == PRICE
    assert [e.kind for e in wallet.ledger.entries()] == ["owner_top_up", "x402"]


def test_channel_terms_and_listing_are_checked_before_the_owner_pays(
    chain, deployment, market, bob, carol, funded_by_owner, tmp_path
):
    connect = funded_by_owner(tmp_path)
    model = market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x0d" * 32, uri="ipfs://model", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip
    with FakeGateway(chain, deployment, carol, lambda required: required) as fake:  # no GET /v1/payments
        wallet = connect(fake.url)
        with pytest.raises(AgentError):
            wallet.open_channel(model, to_units(1))
        unlisted = _dataset(market, bob, b"\x0e", listed=False)
        with pytest.raises(PaymentRefused, match="not listed"):
            wallet.buy_license(unlisted)
    _nothing_pulled(market, wallet)
    assert not market.marketplace.has_access(unlisted, wallet.address)


# ---------------------------------------------------------------------- a lost answer


@contextmanager
def _lossy_proxy(upstream: str, fault: str, client_timeout: float) -> Iterator[Scripted]:
    """A proxy to ``upstream`` that forwards every request; the first model call is forwarded (the server runs
    and debits it) and then its answer is lost: ``drop`` sends the head and half the body and closes,
    ``stall`` sends nothing until the client gave up."""
    faults = [fault]

    def forward(handler: BaseHTTPRequestHandler) -> None:
        keep = {k: v for k, v in handler.headers.items() if k.lower() in ("content-type", "x-payment-channel")}
        real = httpx.request(handler.command, upstream + handler.path, headers=keep, content=handler.body, timeout=30)
        lose = faults.pop() if handler.path.endswith("/invoke") and faults else None
        if lose == "stall":
            time.sleep(client_timeout + 2)
            handler.close_connection = True
            return
        handler.send_response(real.status_code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(real.content)))
        handler.end_headers()
        if lose == "drop":
            handler.wfile.write(real.content[: len(real.content) // 2])
            handler.close_connection = True
            return
        handler.wfile.write(real.content)

    with Scripted({}, fallback=forward) as proxy:
        yield proxy


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_a_call_whose_answer_was_lost_counts_and_the_channel_keeps_working(
    chain, deployment, market, alice, bob, tmp_path, fault
):
    model = market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x0f" * 32, uri="ipfs://echo", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        settle_interval=3600)  # fmt: skip
    app = create_app(settings, chain=chain, model_handlers={model: lambda payload: {"echo": payload}})
    timeout = httpx.Timeout(30, read=2.0)
    with serving(app) as upstream, _lossy_proxy(upstream, fault, 2.0) as proxy:
        client = MarketplaceClient.connect(proxy.url, alice, chain, http=httpx.Client(base_url=proxy.url,
                                                                                     timeout=timeout))  # fmt: skip
        channel = client.open_channel(model, to_units(5))
        with pytest.raises(ServerUnreachable) as lost:
            client.invoke(model, [1], channel_id=channel)
        assert lost.value.sent and "\n" not in str(lost.value)
        assert client.channel_count(channel).answered == PRICE  # the unknown outcome counts
        second = client.invoke(model, [2], channel_id=channel)  # before the fix: 402, then refused for good
        assert second.output == {"echo": [2]}
        assert second.payment.debited == 2 * PRICE  # the server had debited the lost one
        assert client.channel_count(channel).signed == 2 * PRICE  # no slack left once it answered

        # A request that never left (nothing listens) is not counted.
        closed = MarketplaceClient(upstream.rsplit(":", 1)[0] + ":9", alice, chain, deployment,
                                   voucher_book=client.voucher_book)  # fmt: skip
        with pytest.raises(ServerUnreachable) as refused:
            closed.invoke(model, [3], channel_id=channel)
        assert not refused.value.sent
        assert client.channel_count(channel).answered == 2 * PRICE
