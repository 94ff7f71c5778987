"""The gateway process that ``scripts/bench_gateway.py`` measures, run the way a provider runs it.

    python scripts/bench_gateway_server.py --rpc URL --manifest PATH --data-dir DIR --port N \\
        --model ID=bench_gateway_server:add_numbers [--settle-interval S] [--voucher-sync full|normal] \\
        [--stats FILE] [--profile FILE]

The app is ``create_app(settings, model_handlers=...)`` served by uvicorn with the configuration
``agentmarket serve`` uses (``marketplace.api.server.server_config``: one process, the same limits),
the ``--model`` handler loaded by ``marketplace.inference.parse_handler`` as ``agentmarket serve
--model`` loads it. One route is mounted here, for the benchmark's baseline only (never part of the
product API):
``POST /bench/unpaid/{id}`` runs the same handler lookup, request and response models and handler
call as ``POST /v1/models/{id}/invoke``, and charges nothing.

On exit (SIGINT/SIGTERM: uvicorn shuts down, the settler claims every voucher) it writes ``--stats``
(JSON: the voucher ledger's fsync'd commits) and, with ``--profile``, cProfile statistics of every
thread of the server (event loop and request threads) to that file.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import threading
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Path

from marketplace.api import Settings, create_app
from marketplace.api.deps import ServicesDep
from marketplace.api.errors import ApiError
from marketplace.api.server import server_config
from marketplace.inference import ModelHandler, parse_handler
from marketplace.protocol.wire import ChannelReceipt, InvokeRequest, InvokeResponse


def add_numbers(payload: Any) -> dict[str, float]:
    """The served model: sums its input (cheap, so the gateway's own cost is what gets measured)."""
    return {"sum": float(sum(payload))}


#: The payment body of an unpaid call: a receipt of nothing (the route answers the same shape as a paid one).
_NO_PAYMENT = ChannelReceipt(channel_id=0, asset_id=0, price=0, max_claimable_amount=0, highest_voucher=0, debited=0,
                             calls=0, deposit=0, deposit_left=0, calls_left=0)  # fmt: skip


def add_unpaid_route(app: FastAPI) -> None:
    """/bench/unpaid/{id}: the model route's handler lookup, models and handler call, without payment."""

    @app.post("/bench/unpaid/{asset_id}", response_model=InvokeResponse)
    def unpaid(asset_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: InvokeRequest, services: ServicesDep) -> Any:
        handler = services.model_handlers.get(asset_id)
        if handler is None:
            raise ApiError(404, "model_not_served", f"this server does not serve model {asset_id}")
        return InvokeResponse(output=handler(body.input), payment=_NO_PAYMENT)


def parse_models(specs: list[str]) -> dict[int, ModelHandler]:
    """``ID=package.module:function`` options, as ``agentmarket serve --model`` takes them."""
    handlers = {}
    for spec in specs:
        asset_id, sep, handler = spec.partition("=")
        if not sep or not asset_id.isdigit():
            raise SystemExit(f"--model {spec!r} must look like ID=package.module:function")
        handlers[int(asset_id)] = parse_handler(handler)
    return handlers


class ThreadProfiles:
    """cProfile in every thread started from now on, plus this one (cProfile alone sees one thread)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        threading.setprofile(self._start_in_thread)
        self._start()

    def _start(self) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU time of its thread: waits do not count
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def _start_in_thread(self, *_args: Any) -> None:
        self._start()  # replaces this hook in the thread with the profiler

    def dump(self, path: FilePath) -> None:
        """Merge every thread's statistics into ``path`` (pstats format)."""
        threading.setprofile(None)
        for profile in self.profiles:
            profile.disable()
        pstats.Stats(*self.profiles).dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpc", required=True)
    parser.add_argument("--manifest", type=FilePath, required=True)
    parser.add_argument("--data-dir", type=FilePath, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", action="append", default=[], help="ID=package.module:function (repeatable)")
    parser.add_argument("--settle-interval", type=float, default=30.0)
    parser.add_argument("--voucher-sync", choices=["full", "normal"], default="full")
    parser.add_argument("--stats", type=FilePath, help="write JSON statistics here on exit")
    parser.add_argument("--profile", type=FilePath, help="write cProfile statistics of every thread here on exit")
    args = parser.parse_args()
    settings = Settings(rpc_url=args.rpc, manifest=args.manifest, data_dir=args.data_dir, port=args.port,
                        settle_interval=args.settle_interval, voucher_sync=args.voucher_sync)  # fmt: skip
    app = create_app(settings, model_handlers=parse_models(args.model))
    add_unpaid_route(app)
    profiles = ThreadProfiles() if args.profile else None
    try:
        uvicorn.Server(server_config(app)).run()  # as `agentmarket serve` runs it
    except KeyboardInterrupt:  # uvicorn re-raises the signal it shut down on
        pass
    finally:
        if profiles is not None:
            profiles.dump(args.profile)
        if args.stats is not None:
            services = getattr(app.state, "services", None)
            stats = {"ledger_commits": services.ledger.commits if services is not None else None}
            args.stats.write_text(json.dumps(stats))
    sys.exit(0)


if __name__ == "__main__":
    main()
