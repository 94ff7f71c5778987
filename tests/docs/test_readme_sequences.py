"""The README's shell sequences run pasted in the order written (issue 13 §5), in an empty directory with
only ``.venv`` in it (a fresh clone after ``make``): the local marketplace (``node`` and ``serve`` as
background processes, as in their two terminals), then the provider's, the agent developer's and the agent's
blocks, line by line, through ``bash`` and the venv's real ``agentmarket`` script, and the README's stock x402
client snippet pays for a download from that server; the researcher's block (which needs no node) in a test of
its own.

What a user types or has that a test cannot, and only that, is replaced: the two ports (free ones instead of
8545 and 8000, through the documented ``AGENTMARKET_RPC`` / ``AGENTMARKET_SERVER``), the password prompts
(``AGENTMARKET_PASSWORD``), the Ollama URL of the LLM line (a local OpenAI-protocol stub), the ``…`` of
``AGENTMARKET_PASSWORD=…``, and ``make`` lines (the venv is there already). Unless
``AGENTMARKET_README_FULL=1``, the researcher's commands run on a smaller world (``--param`` overrides appended,
a sweep's grid cut to two points): as written they take minutes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from marketplace.wallet_file import load_wallet
from tests.helpers.cli import free_port
from tests.helpers.openai_stub import ScriptedLLM, answer

pytestmark = pytest.mark.backend("anvil")

README = Path(__file__).resolve().parents[2] / "README.md"
VENV = Path(sys.executable).parent.parent
#: The sections whose first ``sh`` block is a sequence, in the order a user follows them.
SEQUENCES = (
    "## Run a local marketplace",
    "### List an asset and get paid",
    "### Register an agent, buy and download",
    "### Run an agent",
    "### Run a simulation",
)
PASSWORD = "correct horse"
#: A smaller world for the researcher's commands in the default run (the full ones take minutes).
SMALL = ["rounds=1", "consumers.queries_per_round=2", "producers.shard_size=60"]


def sequence(heading: str) -> list[str]:
    """The commands of the first ``sh`` block under ``heading``: continuation lines joined, comments and
    blank lines left out."""
    text = README.read_text()
    start = text.index(heading + " ") if heading + " " in text else text.index(heading + "\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, f"no sh block under {heading}"
    commands, pending = [], ""
    for line in block.group(1).splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def test_the_sequences_are_in_the_order_a_user_follows():
    text = README.read_text()
    positions = [text.index(heading) for heading in SEQUENCES]
    assert positions == sorted(positions)
    assert all(sequence(heading) for heading in SEQUENCES)


class Shell:
    """Runs README lines in ``home`` like a user's shell: ``export`` sticks, every line must exit 0."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.outputs: dict[str, str] = {}

    def run(self, line: str, *, timeout: float = 300, stdin: int | None = subprocess.DEVNULL) -> str:
        exported = re.fullmatch(r"export (\w+)=(\S+)(\s+#.*)?", line)
        if exported:
            self.env[exported.group(1)] = exported.group(2)
            return ""
        result = subprocess.run(["bash", "-c", line], cwd=self.home, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=stdin, check=False)  # fmt: skip
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        self.outputs[line] = result.stdout
        return result.stdout

    def start(self, line: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.home, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _ports(line: str, rpc_port: int, api_port: int) -> str:
    """The README's ports (8545, 8000) replaced by free ones; ``node`` and ``serve`` named their port."""
    line = re.sub(r"\b8545\b", str(rpc_port), line)
    line = re.sub(r"\b8000\b", str(api_port), line)
    words = shlex.split(line, comments=True)
    if words[:2] == [".venv/bin/agentmarket", "node"] and "--port" not in words:
        line += f" --port {rpc_port}"
    if words[:2] == [".venv/bin/agentmarket", "serve"] and "--port" not in words:
        line += f" --port {api_port}"
    return line


def _smaller(line: str) -> str:
    """A researcher's command on a smaller world: ``SMALL`` appended, and a sweep's grid cut to its first two
    values per parameter (the full grid of six rules takes minutes on two cores)."""
    line = re.sub(r"(--param [\w.]+=)([^,\s]+,[^,\s]+)(,[^\s]+)", r"\1\2", line)
    return line + "".join(f" --param {p}" for p in SMALL)


def _wait(what: str, process: subprocess.Popen[str], ready, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"{what} exited: {process.stderr.read() if process.stderr else ''}"
        assert time.monotonic() < deadline, f"{what} not ready within {timeout} s"
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1).raise_for_status()
        return True
    except httpx.HTTPError:
        return False


def test_the_marketplace_sequences_run_pasted_in_order(tmp_path):
    if not (VENV / "bin" / "agentmarket").is_file():
        pytest.skip(f"no agentmarket script in {VENV} (the sequences run `.venv/bin/agentmarket`)")
    home = tmp_path / "clone"
    home.mkdir()
    (home / ".venv").symlink_to(VENV)
    rpc_port, api_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMARKET_", "PYTHON", "VIRTUAL_ENV"))}
    env = {**clean, "AGENTMARKET_RPC": f"http://127.0.0.1:{rpc_port}", "AGENTMARKET_SERVER": f"http://127.0.0.1:{api_port}",
           "AGENTMARKET_PASSWORD": PASSWORD, "AGENTMARKET_KEYSTORE_SCRYPT_N": "1024",
           "AGENTMARKET_SETTLE_INTERVAL": "5", "COLUMNS": "200"}  # fmt: skip
    shell = Shell(home, env)
    background: list[subprocess.Popen[str]] = []
    try:
        # The local marketplace: node and serve stay up (two terminals), the rest runs in turn.
        for line in sequence(SEQUENCES[0]):
            line = _ports(line, rpc_port, api_port)
            if line.startswith("make "):
                continue
            if line.startswith((".venv/bin/agentmarket node", ".venv/bin/agentmarket serve")):
                process = shell.start(line)
                background.append(process)
                if " node" in line:
                    manifest = home / ".agentmarket" / "deployment.json"
                    _wait("node", process, manifest.exists)  # written once the contracts are deployed
                else:
                    _wait("serve", process, lambda: _answers(f"{env['AGENTMARKET_SERVER']}/healthz"))
                continue
            shell.run(line)
        assert {p.name for p in home.iterdir()} >= {"iris.csv", "iris_model.py", "model-card.json"}

        for line in sequence(SEQUENCES[1]):  # the provider
            shell.run(_ports(line, rpc_port, api_port))
        catalog = httpx.get(f"{env['AGENTMARKET_SERVER']}/v1/assets", timeout=10).json()
        assert [(a["asset_id"], a["kind"], a["price"]) for a in catalog["items"]] == [
            (1, "dataset", "2500000"), (2, "model", "50000"),
        ]  # fmt: skip

        for line in sequence(SEQUENCES[2]):  # the agent developer
            shell.run(_ports(line, rpc_port, api_port))
        assert (home / "bought.csv").read_bytes() == (home / "iris.csv").read_bytes()
        assert (home / "paid.csv").read_bytes() == (home / "iris.csv").read_bytes()
        voucher_call = next(out for line, out in shell.outputs.items() if "--channel 1" in line)
        paid = json.loads(voucher_call)
        assert paid["output"] == "setosa" and paid["payment"]["callsLeft"] == 19  # deposit 1 = 20 calls at 0.05
        listed = next(out for line, out in shell.outputs.items() if "channel ls" in line)
        assert "2.000000" in listed and "open" in listed  # topped up to 2 tUSD

        # The README's stock x402 client, with the two lines that let it pay in TestUSD: one download, paid.
        (snippet,) = [b for b in re.findall(r"```py\n(.*?)```", README.read_text(), re.S) if "set_spend_controls" in b]
        deployment = httpx.get(f"{env['AGENTMARKET_SERVER']}/v1/deployment", timeout=10).json()
        names = {"account": load_wallet(home / "agent.json", PASSWORD),
                 "test_usd_address": deployment["contracts"]["TestUSD"]["address"]}  # fmt: skip
        exec(compile(re.sub(r"\b8000\b", str(api_port), snippet), str(README), "exec"), names)  # our own README
        assert names["paid"].status_code == 200 and names["paid"].content == (home / "iris.csv").read_bytes()

        with ScriptedLLM(lambda _body: answer("I would need to see the digits first.")) as llm:
            for line in sequence(SEQUENCES[3]):  # the agent
                line = _ports(line, rpc_port, api_port).replace("http://127.0.0.1:11434/v1", llm.base_url)
                line = line.replace("AGENTMARKET_PASSWORD=…", f"AGENTMARKET_PASSWORD={shlex.quote(PASSWORD)}")
                shell.run(line)
        assert len(llm.requests) >= 1  # the LLM line reached the (stub) model

    finally:
        for process in reversed(background):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.timeout(900)  # four simulations, two sweeps (one starting a local Ray): minutes on a busy machine
def test_the_researcher_sequence_runs(tmp_path):
    """Needs no node or server of its own (``--chain anvil`` starts one and stops it)."""
    if not (VENV / "bin" / "agentmarket").is_file():
        pytest.skip(f"no agentmarket script in {VENV} (the sequences run `.venv/bin/agentmarket`)")
    home = tmp_path / "clone"
    home.mkdir()
    (home / ".venv").symlink_to(VENV)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMARKET_", "PYTHON", "VIRTUAL_ENV"))}
    shell = Shell(home, {**clean, "COLUMNS": "200"})
    full = os.environ.get("AGENTMARKET_README_FULL") == "1"
    for line in sequence(SEQUENCES[4]):
        shell.run(line if full else _smaller(line), timeout=1800)
    for run in ("runs/baseline", "runs/noisy"):
        assert (home / run / "metrics.json").is_file() and (home / run / "report.md").is_file()
    rows = (home / "runs" / "rules" / "sweep.csv").read_text().count("\n") - 1
    assert rows == (6 if full else 2)  # one per royalty rule of the grid
    sybil = (home / "runs" / "sybil" / "sweep.csv").read_text().splitlines()
    assert "sybil_gain" in sybil[0].split(",") and len(sybil) == 3  # the Ray sweep: unsplit control, split owner
