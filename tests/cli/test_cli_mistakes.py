"""Every mistake a user makes on the command line is one line on stderr and exit 1, and loses nothing
(issue 13 §4); the channel commands and ``--json`` of the commands that act (§5). Each case runs the CLI
as a subprocess, against a real ``agentmarket node`` (anvil) and ``agentmarket serve`` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from marketplace.chain import rpc_chain
from marketplace.chain.deployment import load_deployment
from tests.helpers.cli import AGENTMARKET, assert_one_line_error, free_port, run_cli, wait_for_json
from tests.helpers.stack import cli, node_and_server

pytestmark = pytest.mark.backend("anvil")

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A node and a server, both real processes on 127.0.0.1 (model 2 served by ``builtins:len``)."""
    home = tmp_path_factory.mktemp("mistakes")
    with node_and_server(home, "--model", "2=builtins:len", password=PASSWORD) as running:
        yield running.home, running.env


def ok_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def market_of(stack):
    """The deployment the stack's node runs, read in this process (to check what a failed command left)."""
    home, env = stack
    chain = rpc_chain(env["AGENTMARKET_RPC"])
    return chain, load_deployment(home / ".agentmarket" / "deployment.json", chain).market(chain)


@pytest.fixture(scope="module")
def parties(stack):
    """A provider (dataset 1, half of it for a payee; model 2 at 0.01 tUSD a call), a buyer, and that payee:
    a wallet made with `wallet new` and never funded."""
    home, _env = stack
    payee = ok_json(cli(stack, "wallet", "new", "--json", wallet="payee.json"))
    assert payee["wallet"] == str(home / "payee.json") and payee["encryption_public_key"].startswith("0x")
    provider = ok_json(cli(stack, "wallet", "new", "--json", wallet="provider.json"))["address"]
    buyer = ok_json(cli(stack, "wallet", "new", "--json", wallet="buyer.json"))["address"]
    for wallet, address in (("provider.json", provider), ("buyer.json", buyer)):
        funded = ok_json(cli(stack, "faucet", "--amount", "20", "--json", wallet=wallet))
        assert (funded["address"], funded["minted"], funded["tusd"]) == (address, "20000000", "20000000")
        assert funded["eth_sent_wei"] == str(10**18)
    data = home / "data.csv"
    data.write_text("x,label\n1,0\n" * 100)
    published = ok_json(cli(stack, "asset", "publish", str(data), "--price", "1", "--payee", f"{payee['address']}:5000",
                            "--payee", f"{provider}:5000", "--json", wallet="provider.json"))  # fmt: skip
    assert (published["asset_id"], published["price"], published["listed"]) == (1, "1000000", True)
    weights = home / "counter.bin"
    weights.write_bytes(b"a model that counts its inputs")
    model = ok_json(cli(stack, "asset", "publish", str(weights), "--price", "0.01", "--kind", "1", "--json",
                        wallet="provider.json"))  # fmt: skip
    assert (model["asset_id"], model["kind"]) == (2, "model")
    return {"payee": payee["address"], "provider": provider, "buyer": buyer}


def test_a_wallet_without_eth_gets_one_line_naming_the_faucet_and_keeps_its_earnings(stack, parties):
    bought = ok_json(cli(stack, "buy", "1", "--max-price", "1", "--json", wallet="buyer.json"))
    assert (bought["asset_id"], bought["buyer"], bought["price"]) == (1, parties["buyer"], "1000000")
    home, _env = stack
    fetched = ok_json(cli(stack, "download", "1", "--out", str(home / "got.csv"), "--json", wallet="buyer.json"))
    assert fetched["bytes"] == (home / "data.csv").stat().st_size and fetched["payment"] is None

    no_gas = f"{parties['payee']} has no ETH to pay gas on chain 31337: run `agentmarket faucet`"
    chain, market = market_of(stack)
    claimable = market.vault(1).claimable(market.token.address, parties["payee"])
    assert claimable == 495_000  # half of the price after the 1% fee
    for command in (["buy", "1"], ["channel", "open", "2", "--deposit", "1"], ["withdraw"]):
        assert_one_line_error(cli(stack, *command, wallet="payee.json"), no_gas)
    assert market.vault(1).claimable(market.token.address, parties["payee"]) == claimable  # nothing lost
    assert market.channels.channels_of(parties["payee"]) == [] and not market.marketplace.has_access(
        1, parties["payee"]
    )

    # What the line says to do works: the same withdraw goes through once the faucet sent gas money.
    assert cli(stack, "faucet", "--amount", "0", wallet="payee.json").returncode == 0
    assert cli(stack, "withdraw", wallet="payee.json").returncode == 0
    assert market.token.balance_of(parties["payee"]) == claimable
    chain.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["asset", "publish", "data.csv", "--price", "inf"], "--price 'inf' is not a finite number"),
        (["asset", "publish", "data.csv", "--price", "NaN"], "--price 'NaN' is not a finite number"),
        (
            ["asset", "publish", "data.csv", "--price", "9" * 80],
            "--price 99999999999999999999…(80 characters) is too large",
        ),
        (
            ["asset", "publish", "data.csv", "--price", "79228162514264337593544"],
            "at most 79228162514264337593543.950335 tUSD",
        ),
        (["buy", "1", "--max-price", "-1"], "--max-price -1 is negative"),
        (["channel", "open", "2", "--deposit", "1", "--hours", "inf"], "--hours must be a number of hours above 0"),
        (["faucet", "--amount", "0x10"], "--amount '0x10' is not a number"),
    ],
    ids=["inf", "nan", "80-digits", "above-uint96", "negative", "hours-inf", "hex"],
)
def test_a_bad_amount_is_one_line_and_nothing_is_sent(stack, parties, args, message):
    chain, market = market_of(stack)
    before = (market.marketplace.asset_count(), chain.w3.eth.get_transaction_count(parties["buyer"]))
    assert_one_line_error(cli(stack, *args, wallet="buyer.json"), message)
    assert (market.marketplace.asset_count(), chain.w3.eth.get_transaction_count(parties["buyer"])) == before
    chain.close()


def test_wallet_file_mistakes_are_one_line_and_leave_the_file_alone(stack, tmp_path):
    home, _env = stack
    not_keystore = tmp_path / "settings.json"
    not_keystore.write_text('{"theme": "dark"}')
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2, 3]")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe not json")
    cases = [
        (not_keystore, PASSWORD, "is JSON but not an encrypted keystore (version 3): version is None, not 3"),
        (listed, PASSWORD, "is JSON but not an encrypted keystore (version 3): a JSON list, not an object"),
        (garbage, PASSWORD, "is not a keystore file (not JSON)"),
        (tmp_path / "missing.json", PASSWORD, "no wallet at", "agentmarket wallet new"),
        (home / "buyer.json", "wrong horse", "wrong password for"),
    ]
    for path, password, *fragments in cases:
        before = path.read_bytes() if path.exists() else None
        result = run_cli("wallet", "show", "--wallet", str(path), cwd=home,
                         env={**stack[1], "AGENTMARKET_PASSWORD": password})  # fmt: skip
        assert_one_line_error(result, str(path), *fragments)
        assert (path.read_bytes() if path.exists() else None) == before
    # No password at hand and no terminal to type it at: one line, not a prompt that reads garbage.
    without = {k: v for k, v in {**os.environ, **stack[1]}.items() if k != "AGENTMARKET_PASSWORD"}
    prompted = subprocess.run([*AGENTMARKET, "wallet", "show", "--wallet", str(home / "buyer.json")], cwd=home,
                              env=without, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
    assert "set AGENTMARKET_PASSWORD" in prompted.stderr and prompted.returncode == 1
    assert "Traceback" not in prompted.stderr
    # A bad cost for new keystores is refused before anything is written.
    fresh = tmp_path / "fresh.json"
    bad_cost = run_cli("wallet", "new", "--wallet", str(fresh), cwd=home,
                       env={**stack[1], "AGENTMARKET_KEYSTORE_SCRYPT_N": "lots"})  # fmt: skip
    assert_one_line_error(bad_cost, "AGENTMARKET_KEYSTORE_SCRYPT_N must be a power of 2")
    assert not fresh.exists()


REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT) /\S* HTTP/1")


class CuttingProxy:
    """A TCP relay to a real node that passes the first ``requests`` HTTP requests, then drops every
    connection and stops listening: the node going away in the middle of a command."""

    def __init__(self, upstream_port: int, requests: int, port: int = 0) -> None:
        self.upstream_port, self.budget = upstream_port, requests
        self.listener = socket.create_server(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen = 0
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, counting: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if counting:
                    self.seen += len(REQUEST_LINE.findall(chunk))
                    if self.seen > self.budget:
                        self.close()
                        return
                target.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.cut.set()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_chain_or_server_that_stops_answering_mid_command_is_one_line_naming_its_url(stack, parties):
    home, env = stack
    proxy = CuttingProxy(int(env["AGENTMARKET_RPC"].rsplit(":", 1)[1]), requests=1)
    try:
        result = cli(stack, "channel", "ls", "--rpc", proxy.url, wallet="buyer.json")
    finally:
        proxy.close()
    assert proxy.seen > 1  # the command had reached the node before it went away
    assert_one_line_error(result, f"the chain's JSON-RPC node at {proxy.url} stopped answering", "agentmarket node")
    # The server going away between login and the content: the download's request is cut. The server
    # sits behind the proxy, so its login messages name the proxy's address (AGENTMARKET_SIWE_DOMAIN).
    public_port, api_port = free_port(), free_port()
    manifest = home / ".agentmarket" / "deployment.json"
    server = subprocess.Popen([*AGENTMARKET, "serve", "--rpc", env["AGENTMARKET_RPC"], "--manifest", str(manifest),
                               "--port", str(api_port), "--data-dir", str(home / "behind-proxy")], cwd=home,
                              env={**os.environ, "AGENTMARKET_SIWE_DOMAIN": f"127.0.0.1:{public_port}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_json(f"http://127.0.0.1:{api_port}/healthz", server)
        proxy = CuttingProxy(api_port, requests=3, port=public_port)  # deployment, nonce, verify
        try:
            result = cli(stack, "download", "1", "--out", str(home / "cut.csv"), "--server", proxy.url,
                         wallet="buyer.json")  # fmt: skip
        finally:
            proxy.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert proxy.seen == 4, result.stderr
    assert_one_line_error(result, f"the marketplace server at {proxy.url}", "the connection broke", "is it running?")
    assert not (home / "cut.csv").exists()


def test_usage_and_environment_mistakes_are_one_line(stack, tmp_path):
    assert_one_line_error(cli(stack, "channel", "open", "2", "--deposit", "1", "--hours", "soon"),
                          "invalid value for '--hours'", "`agentmarket channel open --help`")  # fmt: skip
    assert_one_line_error(cli(stack, "chanel", "ls"), "no such command 'chanel'")
    assert_one_line_error(cli(stack, "asset", "ls", AGENTMARKET_SERVER="not a url"), "not a url")
    # Server settings a simulation's own server reads: checked before anything runs.
    simulated = cli(stack, "simulate", "baseline", "--out", str(tmp_path / "run"), AGENTMARKET_MAX_BODY_BYTES="-5")
    assert_one_line_error(simulated, "AGENTMARKET_MAX_BODY_BYTES")
    assert not (tmp_path / "run").exists()
    version = cli(stack, "--version")
    assert version.returncode == 0 and version.stdout.startswith("agentmarket 0.")


def test_a_scenario_typo_names_its_section(stack, tmp_path):
    scenario = tmp_path / "typo.toml"
    scenario.write_text('name = "typo"\n[royalty]\nrule = "equal"\nshare = 0.5\n')
    assert_one_line_error(cli(stack, "simulate", str(scenario), "--out", str(tmp_path / "run")),
                          "unknown key 'royalty.share'; allowed keys in [royalty]: rule")  # fmt: skip


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_a_sweep_at_once_and_leaves_no_unfinished_point(stack, tmp_path):
    """Issue 13 §4: Ctrl-C took 22-34 s, finished another grid point and left empty folders."""
    out = tmp_path / "sweep"
    tiny = ["rounds=2", "producers.count=3", "producers.shard_size=80", "builders.count=1", "consumers.count=2"]
    sweep = subprocess.Popen(
        [*AGENTMARKET, "sweep", "baseline", *[f"--param={p}" for p in tiny], "--param",
         "royalty.rule=none,equal,proportional", "--workers", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("*.incomplete")):  # the workers are running grid points
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stderr.read() if sweep.stderr else ""
            time.sleep(0.05)
        workers = _children(sweep.pid)
        started = time.monotonic()
        sweep.send_signal(signal.SIGINT)
        code = sweep.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if sweep.poll() is None:
            sweep.kill()
    stderr = sweep.stderr.read()
    assert code == 130 and took < 5, (code, took, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "of 3 grid points finished" in lines[0]
    left = sorted(p.name for p in out.iterdir())
    assert all(not name.endswith(".incomplete") for name in left), left
    assert all((out / name / "metrics.json").is_file() for name in left if name.startswith("point-")), left
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]


def _anvil(stack, method: str, params: list) -> object:
    return httpx.post(stack[1]["AGENTMARKET_RPC"], json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                          "params": params}, timeout=10).json()["result"]  # fmt: skip


def test_channel_commands_from_open_to_reclaim(stack, parties):
    """Runs last: it moves the node's clock past the channel's claim window."""
    opened = ok_json(cli(stack, "channel", "open", "2", "--deposit", "0.02", "--hours", "1", "--json",
                         wallet="buyer.json"))  # fmt: skip
    channel = opened["channel_id"]
    assert (opened["deposit"], opened["claimed"], opened["state"], opened["counted_answered"]) == (
        "20000", "0", "open", None,
    )  # fmt: skip
    assert opened["claim_deadline"] == opened["expiry"] + 900
    called = ok_json(cli(stack, "invoke", "2", "--channel", str(channel), "--input", "[1, 2, 3]", wallet="buyer.json"))
    receipt = called["payment"]
    assert (called["output"], receipt["debited"], receipt["deposit"], receipt["depositLeft"], receipt["callsLeft"]) == (
        3, "10000", "20000", "10000", 1,
    )  # fmt: skip
    topped = ok_json(cli(stack, "channel", "top-up", str(channel), "--amount", "0.03", "--json", wallet="buyer.json"))
    assert (topped["deposit"], topped["added"]) == ("50000", "30000")
    extended = ok_json(cli(stack, "channel", "extend", str(channel), "--hours", "1", "--json", wallet="buyer.json"))
    assert extended["expiry"] == opened["expiry"] + 3600
    deadline = time.monotonic() + 10  # the gateway sees the top-up within its poll interval (1 s)
    while True:
        receipt = ok_json(cli(stack, "invoke", "2", "--channel", str(channel), "--input", "[1]", wallet="buyer.json"))
        if receipt["payment"]["deposit"] == "50000" or time.monotonic() > deadline:
            break
    assert (receipt["payment"]["debited"], receipt["payment"]["depositLeft"], receipt["payment"]["callsLeft"]) == (
        "20000", "30000", 3,
    )  # fmt: skip
    listed = ok_json(cli(stack, "channel", "ls", "--json", wallet="buyer.json"))
    assert listed["payer"] == parties["buyer"]
    (row,) = [r for r in listed["channels"] if r["channel_id"] == channel]
    assert (row["deposit"], row["counted_answered"], row["state"]) == ("50000", "20000", "open")

    # Only the asset's owner ends service early; its payer is told when it can reclaim instead.
    assert_one_line_error(cli(stack, "channel", "close", str(channel), wallet="buyer.json"),
                          f"only the owner of asset 2 ({parties['provider']}) may close channel {channel}",
                          f"agentmarket channel reclaim {channel}")  # fmt: skip
    assert_one_line_error(cli(stack, "channel", "top-up", str(channel), "--amount", "1", wallet="provider.json"),
                          f"only its payer ({parties['buyer']}) may top up channel {channel}")  # fmt: skip
    closed = ok_json(cli(stack, "channel", "close", str(channel), "--json", wallet="provider.json"))
    assert closed["state"] == "expired (claim window)"
    assert_one_line_error(cli(stack, "channel", "reclaim", str(channel), wallet="payee.json"),
                          f"channel {channel} can be reclaimed from", "claim window")  # fmt: skip
    assert_one_line_error(cli(stack, "channel", "top-up", str(channel), "--amount", "1", wallet="buyer.json"),
                          f"channel {channel} ended at")  # fmt: skip

    chain, market = market_of(stack)
    deadline = time.monotonic() + 30  # the settler claims the answered calls as soon as it sees the close
    while market.channels.channel(channel).claimed < 20_000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert market.channels.channel(channel).claimed == 20_000
    _anvil(stack, "evm_increaseTime", [901])
    _anvil(stack, "evm_mine", [])
    before = market.token.balance_of(parties["buyer"])
    reclaimed = ok_json(cli(stack, "channel", "reclaim", str(channel), "--json", wallet="payee.json"))  # anyone may
    assert (reclaimed["refunded"], reclaimed["state"]) == ("30000", "settled")
    assert market.token.balance_of(parties["buyer"]) - before == 30_000
    assert_one_line_error(cli(stack, "channel", "reclaim", str(channel), wallet="payee.json"), "settled already")
    assert_one_line_error(cli(stack, "channel", "reclaim", "99", wallet="payee.json"), "there is no channel 99")
    chain.close()
