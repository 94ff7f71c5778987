"""Gateway throughput on anvil, measured in one run: paid model calls/s with channel vouchers, the same
endpoint unpaid, and x402 with on-chain settlement per call.

    python scripts/bench_gateway.py                 # table
    python scripts/bench_gateway.py --json          # machine-readable
    python scripts/bench_gateway.py --calls 600 --x402-calls 60 --concurrency 8
    python scripts/bench_gateway.py --voucher-sync normal   # the gateway as `serve --voucher-sync normal`

Targets (from the payments issue): channel-paid >= 0.75x unpaid, and >= 20x x402 per-call. They are
reported as measured (PASS/FAIL text), never asserted: the machine is shared and noisy.

How it measures: one anvil node and the contract set; the gateway runs as its own process, the way a
provider runs it (``scripts/bench_gateway_server.py``: ``create_app`` under uvicorn with the
configuration of ``agentmarket serve``, one worker, the model handler loaded from ``--model
ID=bench_gateway_server:add_numbers``), on a free port of 127.0.0.1. This process is the load
generator: an asyncio loop with httpx (``--concurrency`` worker coroutines, keep-alive connections)
drives every path:

- ``unpaid``: POST /bench/unpaid/{id}, a route the server script mounts for this baseline only (it is
  no part of the product API): the same handler lookup, request and response models and model handler
  as /v1/models/{id}/invoke, but no payment;
- ``channel-paid``: POST /v1/models/{id}/invoke with a voucher the client signs for that call (one
  channel per worker); ``channel-paid, pre-signed`` sends vouchers signed before the clock starts;
- ``x402 per-call``: POST /v1/models/{id}/invoke, the same endpoint and model, paid by the stock
  x402 httpx client (402, sign an EIP-3009 authorization, retry); the server verifies the payment,
  runs the model and settles every call on anvil before answering.

The paths take turns in ``--rounds`` rounds (order rotated each round) so that a burst of load from
elsewhere on the machine spreads over all of them. "server cpu ms/call" is the gateway process's CPU
time per call (from /proc), "client cpu ms/call" this process's; anvil runs in a third process. The
settler runs as configured (every 30 s by default). After the run the server is stopped with SIGINT
(its settler claims every voucher) and the vaults are checked on chain: the model's vault holds every
channel and x402 call's price. ``--profile FILE`` writes cProfile statistics of every server thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from marketplace.chain import Chain, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import caip2, format_units, to_units
from marketplace.payments.channels import VoucherLedger
from marketplace.protocol.vouchers import HEADER, VoucherHasher

PRICE = to_units("0.01")
UNPAID, CHANNEL, PRESIGNED, X402 = "unpaid", "channel-paid", "channel-paid, pre-signed", "x402 per-call"
TARGETS = {  # name: (numerator path, denominator path, minimum ratio)
    "channel-paid / unpaid": (CHANNEL, UNPAID, 0.75),
    "channel-paid / x402 per-call": (CHANNEL, X402, 20.0),
}


# ---------------------------------------------------------------------- the server (its own process)

SERVER_SCRIPT = FilePath(__file__).with_name("bench_gateway_server.py")
MODEL_HANDLER = "bench_gateway_server:add_numbers"


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """The gateway process."""

    process: subprocess.Popen[bytes]
    base_url: str
    stats_file: FilePath

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process used so far."""
        fields = FilePath(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, Any]:
        """What the process wrote on exit."""
        return json.loads(self.stats_file.read_text())


@contextmanager
def serving(
    setup: Setup, work: FilePath, settle_interval: float, profile: FilePath | None, voucher_sync: str = "full"
) -> Iterator[Server]:
    """Start the gateway process for ``setup`` and wait until it answers; stop it (SIGINT) on leaving.

    Stopping it makes its settler claim every voucher; the block raises if it does not exit cleanly.
    """
    port = free_port()
    data_dir, stats_file = work / "server", work / "server-stats.json"
    command = [sys.executable, str(SERVER_SCRIPT), "--rpc", str(setup.chain.rpc_url),
               "--manifest", str(setup.deployment.save(work / "deployment.json")), "--data-dir", str(data_dir),
               "--port", str(port), "--model", f"{setup.model_id}={MODEL_HANDLER}",
               "--settle-interval", str(settle_interval), "--voucher-sync", voucher_sync,
               "--stats", str(stats_file)]  # fmt: skip
    if profile is not None:
        command += ["--profile", str(profile)]
    process = subprocess.Popen(command, cwd=FilePath(__file__).resolve().parent.parent)
    server = Server(process, f"http://127.0.0.1:{port}", stats_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway process exited with {process.returncode}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway process did not start")
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError("the gateway process did not stop") from None
    if code != 0:
        raise RuntimeError(f"the gateway process exited with {code}")


# ---------------------------------------------------------------------- the set-up on chain


@dataclass
class Setup:
    """The chain state the run needs: a served model and one channel per worker."""

    chain: Chain
    deployment: Deployment
    market: Market
    payer: Any
    model_id: int
    channels: list[int]
    #: Deposit per channel, and how many channels (one per worker) :func:`open_channels` opens.
    per_channel: int = 0
    concurrency: int = 0
    #: Per channel: the ceiling of the last voucher signed.
    spent: dict[int, int] = field(default_factory=dict)
    vouchers: VoucherHasher | None = None

    def next_header(self, channel_id: int) -> str:
        """Sign the voucher that pays one more call on ``channel_id`` (what the SDK's client does per call)."""
        if self.vouchers is None:
            self.vouchers = VoucherHasher(self.market.channels.domain)
        ceiling = self.spent.get(channel_id, 0) + PRICE
        self.spent[channel_id] = ceiling
        return self.vouchers.voucher(self.payer, channel_id, ceiling).to_header()


def prepare(chain: Chain, concurrency: int, channel_calls: int) -> Setup:
    deployer, payer, owner = chain.accounts[0], chain.accounts[1], chain.accounts[2]
    deployment = deploy_all(chain, deployer)
    market = deployment.market(chain)
    per_channel = (channel_calls // concurrency + 100) * PRICE
    market.token.mint(deployer, payer.address, per_channel * concurrency + to_units(1000))
    model_id = market.marketplace.publish(owner, kind=AssetKind.MODEL, content_hash=b"\x01" * 32, uri="bench:model",
                                          token=market.token.address, payees=[(owner.address, 10_000)],
                                          price=PRICE)  # fmt: skip
    market.token.approve(payer, market.channels.address, per_channel * concurrency)
    return Setup(chain, deployment, market, payer, model_id, [], per_channel=per_channel, concurrency=concurrency)


def open_channels(setup: Setup, server: Server) -> None:
    """One channel per worker, naming the gateway's own settlement key (``GET /v1/payments``) as receiver."""
    terms = httpx.get(f"{server.base_url}/v1/payments", timeout=10).json()["payment_channel"]
    expiry = setup.chain.timestamp() + 3 * 3600
    setup.channels = [
        setup.market.channels.open(
            setup.payer,
            setup.model_id,
            setup.market.token.address,
            setup.per_channel,
            expiry,
            receiver_authorizer=terms["receiverAuthorizer"],
        )
        for _ in range(setup.concurrency)
    ]


# ---------------------------------------------------------------------- the clients


@dataclass
class PathResult:
    """What one path did over every round."""

    calls: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
        return {
            "calls": self.calls,
            "seconds": round(self.seconds, 4),
            "calls_per_s": round(self.rate, 2),
            "server_cpu_ms_per_call": round(self.server_cpu_seconds / self.calls * 1000, 2) if self.calls else None,
            "client_cpu_ms_per_call": round(self.cpu_seconds / self.calls * 1000, 2) if self.calls else None,
            "latency_ms_p50": round(statistics.median(ordered) * 1000, 2) if ordered else None,
            "latency_ms_p95": round(p95 * 1000, 2),
        }


Call = Callable[[int], Awaitable[None]]  # worker index -> one call (raises unless it succeeded)


def split(calls: int, workers: int) -> list[int]:
    """``calls`` spread over ``workers`` as evenly as possible."""
    return [calls // workers + (1 if w < calls % workers else 0) for w in range(workers)]


async def drive(
    call: Call, calls: int, concurrency: int, result: PathResult | None, server_cpu: Callable[[], float]
) -> None:
    """Make ``calls`` calls from ``concurrency`` workers at once; add the time and CPU taken to ``result``."""
    latencies: list[float] = []

    async def worker(index: int, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started, cpu_started, server_started = time.perf_counter(), time.process_time(), server_cpu()
    await asyncio.gather(*(worker(w, n) for w, n in enumerate(split(calls, concurrency)) if n))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    server = server_cpu() - server_started
    if result is not None:
        result.calls += calls
        result.seconds += elapsed
        result.cpu_seconds += cpu
        result.server_cpu_seconds += server
        result.latencies += latencies


def _ok(response: httpx.Response, path: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")


def stock_x402_client(setup: Setup) -> x402Client:
    """The x402 package's own client, allowed to pay in TestUSD on this chain."""
    network = caip2(setup.chain.chain_id)
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(setup.payer), networks=network)
    return client.set_spend_controls({"allowed_assets": [{"network": network, "asset": setup.market.token.address}]})


@dataclass
class Plan:
    calls: int
    x402_calls: int
    concurrency: int
    rounds: int
    warmup: int


async def measure(setup: Setup, server: Server, plan: Plan) -> tuple[dict[str, PathResult], dict[str, int]]:
    """Run every path for ``plan.rounds`` rounds; returns the timed results and every call made (warm-up too)."""
    base_url = server.base_url
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    body = {"input": [1, 2, 3]}
    unpaid_url = f"/bench/unpaid/{setup.model_id}"
    invoke_url = f"/v1/models/{setup.model_id}/invoke"
    presigned: dict[int, list[str]] = {}

    async with (
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http,
        httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            transport=x402_httpx_transport(stock_x402_client(setup), httpx.AsyncHTTPTransport(limits=limits)),
        ) as paying,
    ):

        async def unpaid(_worker: int) -> None:
            _ok(await http.post(unpaid_url, json=body), UNPAID)

        async def channel_paid(worker: int) -> None:
            header = setup.next_header(setup.channels[worker])
            _ok(await http.post(invoke_url, json=body, headers={HEADER: header}), CHANNEL)

        async def channel_presigned(worker: int) -> None:
            header = presigned[worker].pop()
            _ok(await http.post(invoke_url, json=body, headers={HEADER: header}), PRESIGNED)

        async def x402_paid(_worker: int) -> None:
            response = await paying.post(invoke_url, json=body)
            _ok(response, X402)
            if response.json()["output"] != {"sum": 6.0} or "payment-response" not in response.headers:
                raise RuntimeError(f"{X402}: wrong output or no PAYMENT-RESPONSE")

        def presign(calls: int) -> None:
            for worker, count in enumerate(split(calls, plan.concurrency)):
                channel = setup.channels[worker]
                presigned[worker] = [setup.next_header(channel) for _ in range(count)][::-1]  # pop() takes the lowest

        paths: list[tuple[str, Call, int]] = [
            (UNPAID, unpaid, plan.calls),
            (CHANNEL, channel_paid, plan.calls),
            (PRESIGNED, channel_presigned, plan.calls),
            (X402, x402_paid, plan.x402_calls),
        ]
        made = {name: 0 for name, _call, _calls in paths}
        # Warm-up (untimed): connections, channel state cached by the gate, EIP-712 domains, x402 server.
        for name, call, _calls in paths:
            count = max(1, min(plan.warmup, _calls))
            if name == PRESIGNED:
                presign(count)
            await drive(call, count, plan.concurrency, None, server.cpu_seconds)
            made[name] += count

        results = {name: PathResult() for name, _call, _calls in paths}
        for round_index in range(plan.rounds):
            shift = round_index % len(paths)
            for name, call, total in paths[shift:] + paths[:shift]:
                count = split(total, plan.rounds)[round_index]
                if not count:
                    continue
                if name == PRESIGNED:
                    presign(count)
                await drive(call, count, plan.concurrency, results[name], server.cpu_seconds)
                made[name] += count
    return results, made


# ---------------------------------------------------------------------- the run


def run(
    plan: Plan, settle_interval: float, profile: FilePath | None = None, voucher_sync: str = "full"
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    chain = connect("anvil")
    try:
        setup = prepare(chain, plan.concurrency, 2 * plan.calls + 2 * plan.warmup)
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
            work = FilePath(tmp)
            with serving(setup, work, settle_interval, profile, voucher_sync) as server:
                open_channels(setup, server)
                results, made = asyncio.run(measure(setup, server, plan))
            # The server is stopped: its settler made its last round. Check the books.
            with VoucherLedger(work / "server" / "channels.sqlite3") as ledger:
                unclaimed = ledger.claimable()
            settlement = check_vaults(setup, made, unclaimed)
            # Group commit: every write of the voucher ledger (debits, and the settler's notes) per fsync'd commit.
            settlement["ledger_commits"] = server.stats()["ledger_commits"]
        data = report(plan, settle_interval, results, settlement) | {"voucher_sync": voucher_sync}
        data["load_average_1m"] = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}
        return data
    finally:
        chain.close()


def check_vaults(setup: Setup, made: dict[str, int], unclaimed: list[Any]) -> dict[str, Any]:
    """What the model's vault received on chain against what the paid calls should have paid."""
    channel_calls = made[CHANNEL] + made[PRESIGNED]
    model_vault = setup.market.token.balance_of(setup.market.marketplace.vault_of(setup.model_id))
    claimed = sum(setup.market.channels.channel(c).claimed for c in setup.channels)
    expected = (channel_calls + made[X402]) * PRICE
    return {
        "price": PRICE,
        "channel_calls": channel_calls,
        "x402_calls": made[X402],
        "unpaid_calls": made[UNPAID],
        "model_vault": model_vault,
        "channels_claimed": claimed,
        "vaults_received": model_vault,
        "expected": expected,
        "unclaimed_ledger_entries": len(unclaimed),
        "ok": model_vault == expected and claimed == channel_calls * PRICE and not unclaimed,
    }


def report(
    plan: Plan, settle_interval: float, results: dict[str, PathResult], settlement: dict[str, Any]
) -> dict[str, Any]:
    unpaid_rate = results[UNPAID].rate
    paths = {}
    for name, result in results.items():
        paths[name] = result.as_dict() | {
            "ratio_vs_unpaid": round(result.rate / unpaid_rate, 3) if unpaid_rate else None
        }
    targets = {}
    for name, (numerator, denominator, minimum) in TARGETS.items():
        below = results[denominator].rate
        ratio = results[numerator].rate / below if below else 0.0
        targets[name] = {"measured": round(ratio, 3), "target": f">= {minimum:g}", "pass": ratio >= minimum}
    return {
        "chain": "anvil",
        "client": "httpx.AsyncClient, one asyncio loop in this process",
        "server": "scripts/bench_gateway_server.py: create_app under uvicorn (server_config), its own process",
        "concurrency": plan.concurrency,
        "rounds": plan.rounds,
        "warmup_calls_per_path": plan.warmup,
        "settle_interval_s": settle_interval,
        "paths": paths,
        "targets": targets,
        "settlement": settlement,
    }


def print_tables(data: dict[str, Any]) -> None:
    console = Console()
    console.width = max(console.width, 110)  # piped output defaults to 80 columns
    load = data["load_average_1m"]
    table = Table(
        title=f"gateway throughput on anvil (concurrency {data['concurrency']}, {data['rounds']} rounds, one run; "
        f"voucher ledger synchronous={data['voucher_sync']})",
        caption="cpu ms/call: server = the gateway process, client = this one. "
        f"1-min load average {load['before']:.2f} before, {load['after']:.2f} after, on {load['cpus']} CPUs",
    )
    columns = ("path", "calls", "seconds", "calls/s", "vs unpaid", "server cpu ms/call", "client cpu ms/call", "p50 ms",
               "p95 ms")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right", no_wrap=True)
    for name, row in data["paths"].items():
        table.add_row(name, str(row["calls"]), f"{row['seconds']:.2f}", f"{row['calls_per_s']:.1f}",
                      f"{row['ratio_vs_unpaid']:.3f}x", f"{row['server_cpu_ms_per_call']:.2f}",
                      f"{row['client_cpu_ms_per_call']:.2f}", f"{row['latency_ms_p50']:.1f}",
                      f"{row['latency_ms_p95']:.1f}")  # fmt: skip
    console.print(table)
    targets = Table(title="targets (informational)")
    for column in ("ratio", "measured", "target", "result"):
        targets.add_column(column)
    for name, target in data["targets"].items():
        verdict = "[green]PASS[/]" if target["pass"] else "[red]FAIL[/]"
        targets.add_row(name, f"{target['measured']:.3f}x", target["target"], verdict)
    console.print(targets)
    s = data["settlement"]
    console.print(
        f"settlement: the model's vault received {format_units(s['vaults_received'])} tUSD; expected "
        f"{s['channel_calls']} channel calls x {format_units(s['price'])} + {s['x402_calls']} x402 calls x "
        f"{format_units(s['price'])} = {format_units(s['expected'])} tUSD (channels claimed "
        f"{format_units(s['channels_claimed'])}, unclaimed ledger entries {s['unclaimed_ledger_entries']}) -> "
        + ("[green]OK[/]" if s["ok"] else "[red]MISMATCH[/]")
    )
    synced = "fsync'd commits" if data["voucher_sync"] == "full" else "commits (fsync'd at checkpoints)"
    console.print(f"voucher ledger: {s['channel_calls']} paid calls in {s['ledger_commits']} {synced}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per channel/unpaid path (default 300)")
    parser.add_argument("--x402-calls", type=int, default=40, help="timed x402 calls (default 40)")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight at once (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds the paths take turns in (default 3)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed calls per path first (default 8)")
    parser.add_argument("--settle-interval", type=float, default=30.0, help="settler interval, s (default 30)")
    parser.add_argument("--voucher-sync", choices=["full", "normal"], default="full",
                        help="voucher ledger commits: full (fsync each, the default) or normal")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--profile", type=FilePath, help="write cProfile statistics of the server's threads here")
    args = parser.parse_args()
    if min(args.calls, args.x402_calls, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--calls, --x402-calls, --concurrency and --rounds must be >= 1, --warmup >= 0")
    plan = Plan(args.calls, args.x402_calls, args.concurrency, args.rounds, args.warmup)
    data = run(plan, args.settle_interval, args.profile, args.voucher_sync)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_tables(data)


if __name__ == "__main__":
    main()
