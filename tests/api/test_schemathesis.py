"""Every operation of the HTTP API, fuzzed with schemathesis from the app's own OpenAPI document.

The app runs on the embedded chain, once with its read model on SQLite and once on a PostgreSQL server
(the ``databases`` fixture), with real data behind its paths: two datasets (one delisted),
a model built on one of them and served by a handler, a purchase and a rating, two agents (one
with an encryption key), uploaded content and an open payment channel. Each generated request is
often steered onto that data (known ids, a valid bearer token, a valid or forged voucher, a
structured but wrong x402 payment), so the fuzzing reaches past the 404s and 401s.

Every answer must be below 500, every error (4xx) must be JSON ``{"error": str, "detail": str}``,
and every body (errors included) must match its documented schema. The app runs under uvicorn on 127.0.0.1.

Cases come from ``APIOperation.as_strategy`` (positive and negative) under plain pytest
parametrization and ``@given``: with pytest 9.2, schemathesis 4.32.5's ``schema.parametrize()``
gives every operation the same node id and ``schemathesis.pytest.from_fixture`` fails outright
(it sets ``Function._nodeid``, which pytest 9.2 no longer has).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import httpx
import pytest
import schemathesis
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from marketplace.api import Settings, create_app
from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import to_units
from marketplace.payments.channels import HEADER, Voucher
from tests.helpers.postgres import Databases
from tests.helpers.servers import serving

CONTENT = os.urandom(150_000)  # three 64 KiB frames
PRICE = to_units("0.01")
DEPOSIT = to_units(100)
#: The API's OpenAPI document; it depends only on the routes, so an app that is never started gives it.
OPENAPI = create_app(Settings()).openapi()


def items_in(payload: Any) -> int:
    """The served model: how many items its input holds (422 for a number or null)."""
    return len(payload)


@dataclass
class World:
    """The app and the data its paths can reach."""

    url: str
    market: Market
    assets: list[int]
    agents: list[int]
    addresses: list[str]
    model: int
    channel: int
    session_key: LocalAccount
    token: str = ""
    calls: count = field(default_factory=lambda: count(1))
    #: Status codes answered, per operation.
    seen: dict[str, Counter] = field(default_factory=dict)

    def next_voucher(self) -> str:
        """A valid voucher whose ceiling is one call above any voucher before it (always covers the next call)."""
        amount = next(self.calls) * PRICE
        signature = self.market.channels.sign_voucher(self.session_key, self.channel, amount)
        return Voucher(self.channel, amount, signature).to_header()


def _publish(market: Market, owner: LocalAccount, uri: str, price: int, **kwargs: Any) -> int:
    content_hash = kwargs.pop("content_hash", hashlib.sha256(uri.encode()).digest())
    return market.marketplace.publish(owner, content_hash=content_hash, uri=uri, price=price,
                                      token=market.token.address, payees=[(owner.address, 10_000)],
                                      **{"kind": AssetKind.DATASET, **kwargs})  # fmt: skip


def _login(client: httpx.Client, account: LocalAccount) -> str:
    issued = client.post("/v1/auth/nonce", json={"address": account.address}).json()
    signature = Account.sign_message(encode_defunct(text=issued["message"]), account.key).signature
    verified = client.post("/v1/auth/verify", json={"message": issued["message"], "signature": "0x" + signature.hex()})
    assert verified.status_code == 200, verified.text
    return verified.json()["token"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, databases: Databases):
    chain = connect("embedded")
    try:
        admin, alice, bob, carol, session_key = (chain.accounts[i] for i in (0, 1, 2, 3, 5))
        deployment = deploy_all(chain, admin)
        market = deployment.market(chain)
        market.token.mint(admin, alice.address, to_units(1000))
        iris = _publish(market, alice, "ipfs://iris", to_units(1), content_hash=hashlib.sha256(CONTENT).digest())
        wine = _publish(market, bob, "ipfs://wine", to_units(3))
        market.marketplace.set_listed(bob, wine, False)
        model = market.marketplace.publish(
            carol, kind=AssetKind.MODEL, content_hash=b"\x07" * 32, uri="ipfs://counter", price=PRICE,
            token=market.token.address, payees=[(carol.address, 9_000)], parents=[(iris, 1_000)],
        )  # fmt: skip
        market.token.approve(alice, market.marketplace.address, to_units(10))
        market.marketplace.buy(alice, model, PRICE)
        market.reputation.give_feedback(alice, subject_kind=SubjectKind.ASSET, subject_id=model, value=5,
                                        paid_asset_id=model)  # fmt: skip
        sealed = market.agents.register(alice, "https://agents.example/alice.json",
                                        {"encryptionKey": bytes(PrivateKey.generate().public_key)})  # fmt: skip
        plain = market.agents.register(bob, "https://agents.example/bob.json", {"endpoint": b"http://127.0.0.1:9"})
        market.token.approve(alice, market.channels.address, DEPOSIT)

        home = tmp_path_factory.mktemp("schemathesis")
        settings_ = Settings(manifest=deployment.save(home / "deployment.json"), data_dir=home / "server",
                             database_url=databases.url("world"), siwe_domain="testserver", settle_interval=3600,
                             max_upload_bytes=1_000_000)  # fmt: skip
        app = create_app(settings_, chain=chain, model_handlers={model: items_in})
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/openapi.json").json() == OPENAPI  # the document under test is the one served
            token = _login(client, alice)
            uploaded = client.put(f"/v1/assets/{iris}/content", content=CONTENT,
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert uploaded.status_code == 201, uploaded.text
            receiver = client.get("/v1/payments").json()["payment_channel"]["receiverAuthorizer"]  # its own key
            channel = market.channels.open(alice, model, market.token.address, DEPOSIT, chain.timestamp() + 86_400,
                                           session_key.address, receiver_authorizer=receiver)  # fmt: skip
            yield World(url=url, market=market, assets=[iris, wine, model], agents=[sealed, plain],
                        addresses=[alice.address, bob.address, carol.address, admin.address], model=model,
                        channel=channel, session_key=session_key, token=token)  # fmt: skip
    finally:
        chain.close()


schema = schemathesis.openapi.from_dict(OPENAPI)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


def _b64_json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _voucher_like(world: World) -> st.SearchStrategy[str]:
    """Vouchers that must be refused with a 4xx: forged, over the deposit, unknown channel, bad shapes."""
    channel = st.one_of(st.just(world.channel), st.integers(min_value=-1, max_value=2**257), st.text(max_size=5))
    amount = st.one_of(st.integers(min_value=-1, max_value=2**257), st.just(str(DEPOSIT + 1)), _JSON)
    signature = st.one_of(st.just("0x" + "11" * 65), st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
                          _JSON)  # fmt: skip
    name = st.sampled_from(["maxClaimableAmount", "maxClaimableAmount", "cumulativeAmount"])  # and the old field
    body = st.tuples(channel, name, amount, signature).map(lambda v: {"channelId": v[0], v[1]: v[2], "signature": v[3]})
    return st.one_of(body.map(_b64_json), _JSON.map(_b64_json), _HEADER_TEXT)


def _x402_like() -> st.SearchStrategy[str]:
    """x402 v2 payloads of the right outline and wrong content."""
    authorization = st.fixed_dictionaries({
        "from": st.sampled_from(["0x" + "ab" * 20, "nope"]), "to": st.sampled_from(["0x" + "cd" * 20, ""]),
        "value": st.one_of(st.just("1000000"), _JSON), "validAfter": st.just("0"),
        "validBefore": st.one_of(st.just(str(2**40)), _JSON), "nonce": st.just("0x" + "00" * 32),
    })  # fmt: skip
    accepted = st.fixed_dictionaries({
        "scheme": st.sampled_from(["exact", "upto"]), "network": st.sampled_from(["eip155:31337", "eip155:1"]),
        "amount": st.one_of(st.just("1000000"), _JSON), "asset": st.just("0x" + "ef" * 20),
        "payTo": st.just("0x" + "12" * 20), "maxTimeoutSeconds": st.one_of(st.just(60), _JSON),
        "extra": st.one_of(st.just({"name": "Test USD", "version": "1"}), _JSON),
    })  # fmt: skip
    payload = st.fixed_dictionaries({
        "x402Version": st.sampled_from([2, 1, "2"]), "accepted": st.one_of(accepted, _JSON),
        "payload": st.one_of(st.fixed_dictionaries({"authorization": authorization,
                                                    "signature": st.just("0x" + "22" * 65)}), _JSON),
    })  # fmt: skip
    return payload.map(_b64_json)


def _steer(case: schemathesis.Case, data: st.DataObject, world: World) -> None:
    """Often point the generated request at real ids, a real login, real and forged payments."""
    path = case.operation.path
    iris, wine, model = world.assets
    # None keeps the generated value. Hypothesis favours the first choices: known ids come first.
    known = {
        "asset_id": [model, model, model, iris, None] if path.endswith("/invoke") else [iris, wine, model, None],
        "agent_id": [*world.agents, None],
        "address": [*world.addresses, None],
    }
    for where in (case.path_parameters, case.query):
        for name in set(where or ()) & set(known):
            value = data.draw(st.sampled_from(known[name]), label=name)
            if value is not None:
                where[name] = value
    headers = case.headers if case.headers is not None else {}
    if path.endswith("/content") and data.draw(st.sampled_from([True, False]), label="logged in"):
        headers["Authorization"] = f"Bearer {world.token}"
    if path.endswith("/invoke"):
        payment = data.draw(st.sampled_from(["valid", "valid", "forged", "none"]), label="voucher")
        if payment == "valid":
            headers[HEADER] = world.next_voucher()
        elif payment == "forged":
            headers[HEADER] = data.draw(_voucher_like(world), label="forged voucher")
    if path.endswith("/x402") and data.draw(st.sampled_from([True, False]), label="x402 payment"):
        headers["payment-signature"] = data.draw(_x402_like(), label="x402 payload")
    case.headers = headers


def errors_are_json(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A 4xx or 5xx answer is a JSON object with string "error" and "detail"."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert isinstance(body.get("error"), str) and body["error"], f"no error code: {body!r}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"no detail sentence: {body!r}"


def successes_match_the_schema(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every body, 2xx or 4xx, matches the operation's documented response schema (errors: ErrorBody)."""
    response_schema_conformance(ctx, response, case)


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_no_operation_answers_5xx_and_every_error_is_json(operation: APIOperation, data: st.DataObject, world: World):
    mode = data.draw(st.sampled_from(GenerationMode), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    _steer(case, data, world)
    response = case.call_and_validate(
        base_url=world.url, checks=[not_a_server_error, errors_are_json, successes_match_the_schema]
    )
    world.seen.setdefault(operation.label, Counter())[response.status_code] += 1


#: Proof that the fuzzing got past the 404s and 401s: per operation, answers of which at least one was seen.
REACHED = {
    "GET /v1/assets/{asset_id}": {200},
    "GET /v1/agents/{agent_id}": {200},
    "GET /v1/accounts/{address}/earnings": {200},
    "POST /v1/auth/nonce": {200},
    "PUT /v1/assets/{asset_id}/content": {403, 422},  # logged in: not the owner, or not the content
    "GET /v1/assets/{asset_id}/content": {200},  # the owner downloads
    "GET /v1/assets/{asset_id}/x402": {400, 402},  # the payment itself was examined
    "POST /v1/models/{asset_id}/invoke": {200},  # a paid call answered by the model
    "GET /v1/payments": {200},
}


def test_the_fuzzing_reached_the_data_behind_the_paths(world: World):
    if not world.seen:
        pytest.skip("only meaningful after the fuzzing above, in the same run")
    for label, wanted in REACHED.items():
        if label in world.seen:  # (-k may have run only some operations)
            assert wanted & set(world.seen[label]), (label, dict(world.seen[label]))
