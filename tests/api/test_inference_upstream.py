"""A resold OpenAI-compatible upstream (issue 12 §7): the operator fixes what is forwarded, callers control
only the input, and errors never show the upstream. Paid calls over a real socket, with a local
OpenAI-protocol stub upstream (``tests/helpers/openai_stub.py``) that records exactly what it received."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr
from web3 import Web3

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.errors import AgentmarketError
from marketplace.inference import ModelInputError, UpstreamPolicy, openai_handler, parse_handler
from tests.helpers.cli import free_port
from tests.helpers.openai_stub import ScriptedLLM, answer
from tests.helpers.servers import serving

PRICE = to_units("0.02")
KEY = "sk-operator-secret-4242"
POLICY = UpstreamPolicy(model="operator-model", max_tokens=256, max_messages=8, max_input_chars=2_000)
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def models(market, bob) -> dict[str, int]:
    """Three models bob resells, at 0.02 tUSD a call."""

    def publish(tag: bytes) -> int:
        return market.marketplace.publish(
            bob, kind=AssetKind.MODEL, content_hash=tag * 32, uri="ipfs://llm", price=PRICE,
            token=market.token.address, payees=[(bob.address, 10_000)],
        )  # fmt: skip

    return {"llm": publish(b"\x21"), "tools": publish(b"\x22"), "down": publish(b"\x23")}


@pytest.fixture
def upstream():
    with ScriptedLLM(lambda body: answer("hi there")) as stub:
        yield stub


@pytest.fixture
def client(chain, deployment, tmp_path, relayer, alice, models, upstream):
    """alice's SDK client of the real server: three resold upstreams (the last one down)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    handlers = {
        models["llm"]: openai_handler(upstream.base_url, api_key=KEY, policy=POLICY),
        models["tools"]: openai_handler(upstream.base_url, policy=UpstreamPolicy(model="tool-model", tools=(TOOL,))),
        models["down"]: openai_handler(dead, api_key=KEY, timeout=5, policy=POLICY),
    }
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        relayer_key=SecretStr(Web3.to_hex(relayer.key)), settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=chain, model_handlers=handlers)) as url:
        yield MarketplaceClient.connect(url, alice, chain)


def test_the_operator_fixes_what_is_forwarded(client, market, alice, models, upstream):
    vault = market.marketplace.vault_of(models["llm"])
    answered = client.invoke(models["llm"], {"messages": HELLO})
    assert answered.output["choices"][0]["message"]["content"] == "hi there"
    chosen = {"messages": HELLO, "model": "operator-model", "temperature": 0.2, "top_p": 0.9, "max_tokens": 100,
              "stop": ["\n"], "seed": 7}  # fmt: skip
    client.invoke(models["llm"], chosen)
    assert upstream.requests == [
        {"model": "operator-model", "messages": HELLO, "n": 1, "stream": False, "max_tokens": 256},
        {"model": "operator-model", "messages": HELLO, "n": 1, "stream": False, "max_tokens": 100, "temperature": 0.2,
         "top_p": 0.9, "stop": ["\n"], "seed": 7},
    ]  # fmt: skip
    assert market.token.balance_of(vault) == 2 * PRICE

    # Tools are the operator's: forwarded where configured, never the caller's.
    with pytest.raises(ApiClientError) as own_tools:
        client.invoke(models["tools"], {"messages": HELLO, "tools": [TOOL, TOOL]})
    assert own_tools.value.status == 422 and len(upstream.requests) == 2
    lookup = {"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    call = {"role": "assistant", "content": None, "tool_calls": [lookup]}
    messages = [*HELLO, call, {"role": "tool", "content": "{}", "tool_call_id": "1"}]
    client.invoke(models["tools"], {"messages": messages})
    assert upstream.requests[2:] == [{"model": "tool-model", "messages": messages, "n": 1, "stream": False,
                                      "max_tokens": 1024, "tools": [TOOL]}]  # fmt: skip


REFUSED = {  # the caller's input: a fragment the 422 names
    "128 completions": ({"messages": HELLO, "n": 128}, "'n'"),
    "another model": ({"messages": HELLO, "model": "gpt-4-32k"}, "serves model 'operator-model'"),
    "its own tools": ({"messages": HELLO, "tools": [TOOL]}, "'tools'"),
    "tool choice": ({"messages": HELLO, "tool_choice": "auto"}, "'tool_choice'"),
    "streaming": ({"messages": HELLO, "stream": True}, "'stream'"),
    "log-probabilities": ({"messages": HELLO, "logprobs": True, "top_logprobs": 20}, "'logprobs'"),
    "logit bias": ({"messages": HELLO, "logit_bias": {"50256": 100}}, "'logit_bias'"),
    "too many tokens": ({"messages": HELLO, "max_tokens": 100_000}, "max_tokens must be an integer from 1 to 256"),
    "hot sampling": ({"messages": HELLO, "temperature": 50}, "temperature must be a number from 0 to 2"),
    "too many messages": ({"messages": HELLO * 5}, "at most 8 messages"),
    "a huge message": ({"messages": [{"role": "user", "content": "x" * 3_000}]}, "at most 2000"),
    "a tool result": ({"messages": [*HELLO, {"role": "tool", "content": "{}", "tool_call_id": "1"}]}, "role"),
    "an image": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "text parts",
    ),
    "no messages": ({"prompt": "hello"}, "messages"),
    "not a chat": (["hello"], "messages"),
}


def test_callers_control_only_the_input_and_errors_never_show_the_upstream(client, market, alice, models, upstream,
                                                                           caplog):  # fmt: skip
    before = market.token.balance_of(alice.address)
    for case, (payload, fragment) in REFUSED.items():
        with pytest.raises(ApiClientError) as refused:
            client.invoke(models["llm"], payload)
        assert (refused.value.status, refused.value.code) == (422, "bad_model_input"), case
        assert fragment in refused.value.detail, (case, refused.value.detail)
    assert upstream.requests == []  # nothing refused reached the upstream
    assert market.token.balance_of(alice.address) == before  # and nothing refused was charged

    # The upstream fails (500) or is down: 502 without its URL or key; the operator's log has them.
    upstream.policy = None  # the script is empty: the upstream answers 500
    caplog.set_level(logging.WARNING, logger="marketplace.inference")
    for model, why in ((models["llm"], "failed (HTTP 500)"), (models["down"], "is unreachable")):
        with pytest.raises(ApiClientError) as failed:
            client.invoke(model, {"messages": HELLO})
        assert (failed.value.status, failed.value.code) == (502, "model_failed")
        detail = failed.value.detail
        assert f"the upstream model 'operator-model' {why}" in detail, detail
        for secret in ("127.0.0.1", "/v1", "http", KEY):
            assert secret not in detail, (secret, detail)
    logged = caplog.text
    assert upstream.base_url in logged and "script exhausted" in logged  # the operator's log has the details
    assert KEY not in logged
    assert market.token.balance_of(alice.address) == before  # a failed call costs nothing


def test_model_spec_options(upstream):
    handler = parse_handler(f"openai+{upstream.base_url}#small-model?max_tokens=64&max_messages=2")
    handler({"messages": HELLO, "max_tokens": 10})
    assert upstream.requests == [{"model": "small-model", "messages": HELLO, "n": 1, "stream": False,
                                  "max_tokens": 10}]  # fmt: skip
    with pytest.raises(ModelInputError, match="at most 2 messages"):
        handler({"messages": HELLO * 2})
    with pytest.raises(ModelInputError, match="from 1 to 64"):
        handler({"messages": HELLO, "max_tokens": 65})
    for bad in ("#m?n=4", "#m?max_tokens=lots", "#m?max_tokens=0"):
        with pytest.raises(AgentmarketError):
            parse_handler(f"openai+{upstream.base_url}{bad}")
