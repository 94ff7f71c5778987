"""`agentmarket demo --json` on the embedded chain tells an honest story: the invariants hold on what
was read back from the chain."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import AGENTMARKET, run_cli
from tests.helpers.openai_stub import ScriptedLLM, answer, tool_calls


def test_demo_story_invariants(tmp_path):
    result = run_cli("demo", "--json", "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stderr
    story = json.loads(result.stdout)
    assert story["chain_id"] == 31337 and story["tx_count"] > 30 and story["gas_used"] > 5_000_000
    assert json.loads((tmp_path / "out" / "demo.json").read_text()) == story
    assert "## Payments" in (tmp_path / "out" / "report.md").read_text()

    # The agents held no tUSD: every payment was funded from the owner under the on-chain spend permission.
    licenses = sum(p["amount"] for p in story["payments"] if p["kind"] == "license")
    assert story["owner_funding"]["builder"] == licenses
    assert story["owner_funding"]["buyer"] >= sum(p["amount"] for p in story["payments"] if p["kind"] != "license")
    kinds = {p["kind"] for p in story["payments"]}
    assert kinds == {"license", "x402", "channel"}
    datasets = [a for a in story["assets"] if a["kind"] == "dataset"]
    (model,) = [a for a in story["assets"] if a["kind"] == "model"]
    assert model["parents"] == [d["asset_id"] for d in datasets]  # trained on what it bought, lineage on chain

    # Every provider earned something; the noisy one earned less than each clean one under the data-value rule.
    producers = story["producer_earnings"]
    earned = {d["asset_id"]: producers[d["owner"]] for d in datasets}
    assert min(earned.values()) > 0
    noisy = [d["asset_id"] for d in datasets if d["label_noise"] > 0]
    clean = [d["asset_id"] for d in datasets if d["label_noise"] == 0]
    assert len(noisy) == 1 and all(earned[noisy[0]] < earned[c] for c in clean)

    # Conservation: what buyers paid = everyone's earnings + the protocol fee + rounding dust left in
    # vaults, and after the final releases nothing is claimable beyond dust below one unit per payee.
    earnings = sum(e["amount"] for e in story["earnings_by_address"].values())
    paid = sum(p["amount"] for p in story["payments"])
    assert paid == story["paid_total"] == earnings + story["protocol_fee"] + story["left_in_vaults"]
    payees = sum(1 + len(a.get("parents", [])) + 1 for a in story["assets"])  # owner(s), parents, treasury
    assert 0 <= story["left_in_vaults"] < payees
    assert all(amount < 1 for amount in story["claimable_left"].values())
    assert story["model_accuracy"]["validation"] > 0.9 and story["model_accuracy"]["buyer_queries"] > 0.8
    assert 0 < story["producer_share"] < 1


def llm_buyer(body: dict) -> dict:
    """Plays the buyer's LLM: open a channel to the model on offer once, then pay it for each work item."""
    system, last = body["messages"][0]["content"], body["messages"][-1]
    if last["role"] != "user" or "Work item: " not in last["content"]:
        return answer("All rows classified.")
    (model_id,) = [line.split()[1] for line in system.splitlines() if line.startswith("- ") and " model " in line]
    item = json.loads(last["content"].split("Work item: ", 1)[1])
    invoke = ("invoke_model", json.dumps({"model_id": int(model_id), "input": item}))
    if f"{model_id}: " in system.split("Channels you hold")[1]:
        return tool_calls(invoke)
    return tool_calls(("open_channel", json.dumps({"asset_id": int(model_id), "deposit": 2_000_000})), invoke)


def test_demo_with_an_llm_buyer():
    """`--llm-url`: the buyer is an LLM brain talking to an OpenAI-compatible server (a local stub here)."""
    with ScriptedLLM(llm_buyer) as llm:
        result = run_cli("demo", "--json", "--llm-url", llm.base_url, "--model", "stub-buyer", timeout=300)
    assert result.returncode == 0, result.stderr
    story = json.loads(result.stdout)
    assert len(llm.requests) == 40 and {r["model"] for r in llm.requests} == {"stub-buyer"}
    (channel,) = [p for p in story["payments"] if p["kind"] == "channel"]
    assert channel["amount"] == 40 * 50_000  # every row paid for, by voucher
    assert story["model_accuracy"]["buyer_queries"] > 0.8


def test_demo_with_an_llm_that_never_calls_a_tool(tmp_path):
    """A real small model often answers in text and calls no tool: the story still completes, says the buyer
    bought nothing (0 calls in the lines, the table and the JSON), and skips the rating with the reason."""
    with ScriptedLLM(lambda _body: answer("I would need to look at the digits first.")) as llm:
        result = run_cli("demo", "--llm-url", llm.base_url, "--model", "small", "--out", str(tmp_path),
                         env={"COLUMNS": "250"}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(llm.requests) == 1  # asked once; it answered without a tool call, so the buyer stopped
    out = result.stdout
    assert 'the buyer (LLM) bought nothing: it made no paid model call (brain_finished) and answered: "I would' in out
    assert "no rating: the buyer paid for no call to model #4, and only payers may rate" in out
    assert "0 paid model calls (llm, stopped: brain_finished)" in out and "no buyer query answered" in out
    # The table names every party, never an address (which the table used to cut short).
    table = out[out.index("agentmarket demo on chain") :]
    for party in ("owner (human)", "builder agent", "buyer agent", "provider-a", "provider-b", "provider-c (noisy)",
                  "protocol treasury"):  # fmt: skip
        assert party in table, party
    assert "0x" not in table
    assert "dataset #1 of provider-a: a license" in table and "the builder agent's payments" in table
    story = json.loads((tmp_path / "demo.json").read_text())
    assert set(story["parties"].values()) >= {"owner (human)", "builder agent", "buyer agent", "protocol treasury"}
    assert (
        story["buyer"]["calls"] == 0 and story["buyer"]["final_answer"] == "I would need to look at the digits first."
    )
    assert story["model_accuracy"]["buyer_queries"] is None
    assert [p["kind"] for p in story["payments"]] == ["license"] * 3  # no channel, no x402
    assert "The buyer made 0 paid model calls." in (tmp_path / "report.md").read_text()
    earnings = sum(e["amount"] for e in story["earnings_by_address"].values())
    assert story["paid_total"] == 3 * 3_000_000 == earnings + story["protocol_fee"] + story["left_in_vaults"]


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.backend("anvil")
def test_ctrl_c_stops_the_demo_and_the_anvil_it_started():
    demo = subprocess.Popen([*AGENTMARKET, "demo", "--chain", "anvil"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        lines = []
        for line in demo.stdout:  # wait until the story is under way: chain, contracts, server
            lines.append(line)
            if "marketplace server" in line:
                break
        children = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(demo.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()  # fmt: skip
        anvil = [int(pid) for pid, name in zip(children[::2], children[1::2], strict=True) if name == "anvil"]
        assert len(anvil) == 1, (lines, children)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
        deadline = time.monotonic() + 10
        while running(anvil[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(anvil[0])
    finally:
        demo.kill()
