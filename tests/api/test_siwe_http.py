"""Sign-In with Ethereum over real HTTP: the app under uvicorn on 127.0.0.1, on both chain backends.

Each message a client may sign (EIP-4361's optional scheme, resources, RFC 3339 spellings, ...) logs
in; each it may not (fields out of order or repeated, timestamps without an offset, another origin,
an unbounded or missing expiry, another statement, ...) is a 401 ``invalid_login`` naming why, and
leaves the nonce usable. Garbage bearer tokens are 401s, never 500s. Login nonces are purged when
expired, capped per client and address (oldest dropped), per client and in all (429), with clients
told apart by their source address on the loopback network (127.0.0.2, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from marketplace.api import Settings, create_app
from marketplace.api.state import count_login_nonces
from marketplace.siwe import SiweMessage, format_time, parse_time
from tests.helpers.servers import serving

TTL = 300  # the default nonce lifetime, and so the longest a message may be valid


def sign(account: LocalAccount, text: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex()


def ask(http: httpx.Client, account: LocalAccount | str) -> httpx.Response:
    address = account if isinstance(account, str) else account.address
    return http.post("/v1/auth/nonce", json={"address": address})


def issued(http: httpx.Client, account: LocalAccount) -> dict:
    response = ask(http, account)
    assert response.status_code == 200, response.text
    return response.json()


def verify(http: httpx.Client, text: str, signer: LocalAccount) -> httpx.Response:
    return http.post("/v1/auth/verify", json={"message": text, "signature": sign(signer, text)})


def authenticated(http: httpx.Client, token: str) -> bool:
    """Whether the API takes ``token``: a content request for an asset that does not exist is then a 404."""
    response = http.get("/v1/assets/999999/content", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (401, 404), response.text
    return response.status_code == 404


def in_zone(stamp: str, minutes: int) -> str:
    """The same instant as ``stamp``, written with a ``±hh:mm`` offset."""
    moment = datetime.fromtimestamp(parse_time(stamp), timezone(timedelta(minutes=minutes)))
    offset = f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + offset


@pytest.fixture(scope="module")
def live(session_chain, deployment, tmp_path_factory) -> Iterator[str]:
    """The API with default login settings (SIWE domain ``testserver``), served on 127.0.0.1."""
    home = tmp_path_factory.mktemp("siwe-http")
    settings = Settings(manifest=deployment.save(home / "deployment.json"), data_dir=home / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=session_chain)) as url:
        yield url


@pytest.fixture
def http(live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live, timeout=30) as client:
        yield client


@pytest.fixture
def alice(session_chain) -> LocalAccount:
    return session_chain.accounts[1]


@pytest.fixture
def bob(session_chain) -> LocalAccount:
    return session_chain.accounts[2]


# ---------------------------------------------------------------------- messages a client may sign

Edit = Callable[[SiweMessage], SiweMessage]
replace = dataclasses.replace

ACCEPTED: dict[str, Edit] = {
    "as issued": lambda m: m,
    "explicit scheme http://": lambda m: replace(m, scheme="http"),
    "scheme in capitals": lambda m: replace(m, scheme="HTTP"),
    "resources": lambda m: replace(m, resources=("https://example.com/tos", "ipfs://bafybeie/")),
    "Resources: with none listed": lambda m: replace(m, resources=()),
    "no statement": lambda m: replace(m, statement=None),
    "URI with path, query and fragment": lambda m: replace(m, uri="http://testserver/login?next=%2Fa#top"),
    "URI with the default port, host in capitals": lambda m: replace(m, uri="HTTP://TestServer:80/"),
    "domain in capitals": lambda m: replace(m, domain="TESTSERVER"),
    "request id": lambda m: replace(m, request_id="req-42"),
    "not before now": lambda m: replace(m, not_before=m.issued_at),
    "lowercase t and z": lambda m: replace(m, issued_at=m.issued_at.lower(), expiration_time=m.expiration_time.lower()),
    "numeric offsets": lambda m: replace(
        m, issued_at=in_zone(m.issued_at, 330), expiration_time=in_zone(m.expiration_time, -600)
    ),
    "fractional seconds": lambda m: replace(
        m, issued_at=m.issued_at[:-1] + ".25Z", expiration_time=m.expiration_time[:-1] + ".000001Z"
    ),
    "a shorter validity": lambda m: replace(m, expiration_time=format_time(parse_time(m.issued_at) + 30)),
    "every optional field": lambda m: replace(
        m, scheme="http", not_before=m.issued_at, request_id="r1", resources=("urn:x:y",)
    ),
}


@pytest.mark.parametrize("edit", list(ACCEPTED))
def test_valid_messages_log_in(http, alice, edit):
    message = ACCEPTED[edit](SiweMessage.parse(issued(http, alice)["message"]))
    response = verify(http, message.to_text(), alice)
    assert response.status_code == 200, response.text
    assert response.json()["address"] == alice.address
    assert authenticated(http, response.json()["token"])


# ---------------------------------------------------------------------- messages a client may not sign


def on_text(edit: Callable[[str], str]) -> Callable[[str], str]:
    """Mark an edit of the message's text (the others edit the parsed message)."""
    edit.edits_text = True  # type: ignore[attr-defined]
    return edit


def _replace_line(label: str, line: str) -> Callable[[str], str]:
    return on_text(lambda text: "\n".join(line if x.startswith(label) else x for x in text.split("\n")))


@on_text
def _swap_uri_and_nonce(text: str) -> str:
    lines = text.split("\n")
    uri = next(i for i, x in enumerate(lines) if x.startswith("URI: "))
    nonce = next(i for i, x in enumerate(lines) if x.startswith("Nonce: "))
    lines[uri], lines[nonce] = lines[nonce], lines[uri]
    return "\n".join(lines)


@on_text
def _second_expiration(text: str) -> str:
    return text + "\nExpiration Time: " + format_time(time.time() + 60)


#: Each edit of the issued message (on the message, or on its text), and what the 401's detail must say.
REFUSED: dict[str, tuple[Callable, str]] = {
    "URI and Nonce swapped": (_swap_uri_and_nonce, "must be 'URI:'"),
    "Expiration Time twice": (_second_expiration, "repeated"),
    "Expiration Time a date alone (2999-12-31)": (
        lambda m: replace(m, expiration_time="2999-12-31T00:00:00Z"),
        "at most 300 s",
    ),
    "Expiration Time a date without a time": (
        _replace_line("Expiration Time: ", "Expiration Time: 2999-12-31"),
        "RFC 3339",
    ),
    "Issued At without an offset": (on_text(lambda t: t.replace("Z\nExpiration", "\nExpiration", 1)), "RFC 3339"),
    "no Expiration Time": (lambda m: replace(m, expiration_time=None), "no Expiration Time"),
    "valid one second too long": (
        lambda m: replace(m, expiration_time=format_time(parse_time(m.issued_at) + TTL + 1)),
        "at most 300 s",
    ),
    "Expiration Time before Issued At": (lambda m: replace(m, expiration_time=format_time(0)), "not after"),
    "issued in the future": (
        lambda m: replace(m, issued_at=format_time(time.time() + 120), expiration_time=format_time(time.time() + 240)),
        "future",
    ),
    "not before in the future": (lambda m: replace(m, not_before=format_time(time.time() + 120)), "not valid yet"),
    "scheme https": (lambda m: replace(m, scheme="https"), "scheme"),
    "URI on https": (lambda m: replace(m, uri="https://testserver"), "not on this server"),
    "URI on another host": (lambda m: replace(m, uri="http://evil.example/login"), "not on this server"),
    "URI on another port": (lambda m: replace(m, uri="http://testserver:8080/"), "not on this server"),
    "URI with user info": (lambda m: replace(m, uri="http://alice@testserver/"), "user info"),
    "URI that is not RFC 3986": (_replace_line("URI: ", "URI: http://test server/"), "URI"),
    "URI without a host": (lambda m: replace(m, uri="urn:agentmarket:login"), "with a host"),
    "another statement": (lambda m: replace(m, statement="I allow testserver to spend my tUSD."), "statement"),
    "statement of two lines": (
        on_text(lambda t: t.replace("agentmarket.", "agentmarket.\nAnd pay.", 1)),
        "after the statement",
    ),
    "another domain": (lambda m: replace(m, domain="evil.example"), "domain"),
    "another chain": (lambda m: replace(m, chain_id=1), "chain id"),
    "address not EIP-55": (on_text(lambda t: t.replace(t.split("\n")[1], t.split("\n")[1].lower(), 1)), "EIP-55"),
    "trailing newline": (on_text(lambda t: t + "\n"), "unexpected line"),
    "CRLF line ends": (on_text(lambda t: t.replace("\n", "\r\n")), "line 1"),
    "version 2": (_replace_line("Version: ", "Version: 2"), "version"),
}


def _apply(edit, text: str) -> str:
    if getattr(edit, "edits_text", False):
        return edit(text)
    return edit(SiweMessage.parse(text)).to_text()


@pytest.mark.parametrize("edit", list(REFUSED))
def test_invalid_messages_are_refused_and_the_nonce_survives(http, alice, edit):
    original = issued(http, alice)["message"]
    change, reason = REFUSED[edit]
    tampered = _apply(change, original)
    assert tampered != original
    refused = verify(http, tampered, alice)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_login"
    assert reason in refused.json()["detail"], refused.json()["detail"]
    accepted = verify(http, original, alice)  # the refusal did not use the nonce up
    assert accepted.status_code == 200, accepted.text
    replayed = verify(http, original, alice)
    assert (replayed.status_code, replayed.json()["error"]) == (401, "invalid_login")


def test_a_signature_by_anyone_else_is_refused(http, alice, bob):
    text = issued(http, alice)["message"]
    refused = verify(http, text, bob)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_login")
    assert "not the message address's" in refused.json()["detail"]
    assert verify(http, text, alice).status_code == 200


def test_a_nonce_is_bound_to_its_address(http, alice, bob):
    """Bob signs a message of his own that carries the nonce the server gave to alice."""
    given = issued(http, alice)
    text = replace(SiweMessage.parse(given["message"]), address=bob.address).to_text()
    refused = verify(http, text, bob)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_login")
    assert "nonce" in refused.json()["detail"]


# ---------------------------------------------------------------------- bearer tokens never 500


@pytest.mark.parametrize("value", [
    b"Bearer 0xabc.123.\xe9", b"Bearer \xff\xfe\xfd", b"Bearer 0xabc.\xc2\xb2\xc2\xb3." + b"a" * 43,
    b"Bearer 0xabc." + b"9" * 40 + b"." + b"a" * 43, b"Bearer " + b"\xe9" * 4000, b"Bearer ...", b"Bearer",
    b"bearer abc", b"Basic YWxpY2U6cHc=",
], ids=repr)  # fmt: skip
def test_any_authorization_header_is_a_401_not_a_500(http, alice, value):
    response = http.get("/v1/assets/999999/content", headers={"Authorization": value})
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized" and body["detail"]


def test_a_valid_token_with_a_non_ascii_tail_is_refused(http, alice):
    token = verify(http, issued(http, alice)["message"], alice).json()["token"]
    assert authenticated(http, token)
    for tampered in (token.encode() + b"\xe9", token[:-1].encode() + b"\xe9", token.encode().replace(b".", b"\xb7", 1)):
        response = http.get("/v1/assets/999999/content", headers={"Authorization": b"Bearer " + tampered})
        assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    assert http.get("/healthz").status_code == 200


# ---------------------------------------------------------------------- nonces cannot be flooded

LIMITS = {"siwe_nonce_ttl": 3, "siwe_max_nonces_per_address": 2, "siwe_max_nonces_per_client": 4,
          "siwe_max_nonces": 6}  # fmt: skip


@pytest.fixture
def capped(session_chain, deployment, tmp_path) -> Iterator[tuple[str, FastAPI]]:
    """The API with tiny nonce caps (LIMITS), served on 127.0.0.1."""
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600, **LIMITS)  # fmt: skip
    app = create_app(settings, chain=session_chain)
    with serving(app) as url:
        yield url, app


@pytest.fixture
def clients(capped) -> Iterator[Callable[[str], httpx.Client]]:
    """HTTP clients of the capped API, each from its own loopback source address."""
    url, opened = capped[0], []

    def client_from(source: str) -> httpx.Client:
        client = httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=source))
        opened.append(client)
        return client

    yield client_from
    for client in opened:
        client.close()


def stored(capped) -> int:
    return count_login_nonces(capped[1].state.services.engine)


def assert_too_many(response: httpx.Response, scope: str, cap: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "too_many_nonces"
    assert f"{scope} holds {cap} unused login nonces (at most {cap})" in body["detail"], body["detail"]


def test_asking_again_for_one_address_drops_the_oldest(capped, clients, alice):
    http = clients("127.0.0.1")
    given = [issued(http, alice) for _ in range(10)]
    assert stored(capped) == LIMITS["siwe_max_nonces_per_address"]
    dropped = verify(http, given[0]["message"], alice)
    assert (dropped.status_code, dropped.json()["error"]) == (401, "invalid_login")
    assert "unknown, expired or already used nonce" in dropped.json()["detail"]
    assert verify(http, given[-1]["message"], alice).status_code == 200
    assert stored(capped) == 1  # the used nonce is gone; one unused one is left


def test_nobody_can_lock_an_address_out(capped, clients, alice):
    attacker, victim = clients("127.0.0.2"), clients("127.0.0.3")
    for _ in range(20):  # the attacker asks for alice's nonces over and over: it only replaces its own
        assert ask(attacker, alice).status_code == 200
    assert verify(victim, issued(victim, alice)["message"], alice).status_code == 200


def test_a_client_holding_too_many_nonces_gets_429_and_others_are_served(capped, clients, session_chain):
    greedy, other = clients("127.0.0.2"), clients("127.0.0.3")
    accounts = session_chain.accounts[1:6]
    given = [issued(greedy, account) for account in accounts[:4]]
    assert_too_many(ask(greedy, accounts[4]), "this client", LIMITS["siwe_max_nonces_per_client"])
    assert_too_many(ask(greedy, "0x" + "ab" * 20), "this client", LIMITS["siwe_max_nonces_per_client"])
    assert ask(other, accounts[4]).status_code == 200
    assert verify(greedy, given[0]["message"], accounts[0]).status_code == 200  # using one frees a place
    assert ask(greedy, accounts[4]).status_code == 200
    assert stored(capped) == 5


def test_the_server_wide_cap_gives_429(capped, clients, session_chain):
    accounts = session_chain.accounts[1:8]
    first, second, third = clients("127.0.0.2"), clients("127.0.0.3"), clients("127.0.0.4")
    for account in accounts[:4]:
        assert ask(first, account).status_code == 200
    for account in accounts[4:6]:
        assert ask(second, account).status_code == 200
    assert_too_many(ask(third, accounts[6]), "this server", LIMITS["siwe_max_nonces"])
    assert stored(capped) == LIMITS["siwe_max_nonces"]
    assert capped[1].state.services.settings.siwe_max_nonces == LIMITS["siwe_max_nonces"]


def test_expired_nonces_are_purged_when_the_next_is_issued(capped, clients, session_chain, alice):
    accounts = session_chain.accounts[1:7]
    first, second = clients("127.0.0.2"), clients("127.0.0.3")
    given = [issued(first, account) for account in accounts[:4]] + [
        issued(second, account) for account in accounts[4:6]
    ]
    assert stored(capped) == 6
    time.sleep(max(g["expires_at"] for g in given) - time.time() + 0.05)
    late = verify(first, given[0]["message"], accounts[0])
    assert late.status_code == 401
    assert stored(capped) == 6  # nothing purges them until a nonce is issued...
    fresh = issued(clients("127.0.0.4"), alice)
    assert stored(capped) == 1  # ...and then every expired one goes
    assert verify(first, fresh["message"], alice).status_code == 200
    assert stored(capped) == 0


def test_nonce_settings_come_from_the_environment(monkeypatch):
    environment = {"SIWE_MAX_NONCES_PER_ADDRESS": "3", "SIWE_MAX_NONCES_PER_CLIENT": "7", "SIWE_MAX_NONCES": "11",
                   "SIWE_NONCE_TTL": "60", "SIWE_URI": "https://market.example/"}  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(f"AGENTMARKET_{name}", value)
    settings = Settings()
    read = (settings.siwe_max_nonces_per_address, settings.siwe_max_nonces_per_client, settings.siwe_max_nonces,
            settings.siwe_nonce_ttl, settings.expected_siwe_uri)  # fmt: skip
    assert read == (3, 7, 11, 60, "https://market.example/")
    for name, bad, words in (("SIWE_URI", "market.example", "AGENTMARKET_SIWE_URI"),
                             ("SIWE_URI", "https://alice@market.example", "user info"),
                             ("SIWE_DOMAIN", "https://market.example", "AGENTMARKET_SIWE_DOMAIN"),
                             ("SIWE_MAX_NONCES", "0", "greater than 0")):  # fmt: skip
        monkeypatch.setenv(f"AGENTMARKET_{name}", bad)
        with pytest.raises(ValueError, match=words):
            Settings()
        monkeypatch.delenv(f"AGENTMARKET_{name}")
