"""The gateway's view of the chain for channel payments: the chain's clock and the channels contract's events.

A paid call must be judged by the chain's time and the channel's on-chain state, not by the wall
clock and a cache that never learns of a close — but without a chain call per paid call. A
:class:`ChainWatcher` reads, at most every ``poll_interval`` seconds, the latest block (number and
timestamp) and the ``PaymentChannels`` logs since the last block it saw, and tells its subscribers
which channels those logs touched (opened, topped up, extended, claimed, closed, settled) and which
ones were closed. The gate drops what it cached about touched channels and re-reads them on their
next call; the settler wakes up to claim a closed channel at once.

:meth:`ChainWatcher.now` is the chain's time as best known: the latest block's timestamp plus the
seconds elapsed since it was read, and never less than the wall clock (the next block cannot be
older than that on a live chain), so an expiry is judged no later than the contract will judge it.

A chain replaced under the watcher (a restarted node: same chain id and addresses, another genesis
block) is not a reorg: when the latest block does not follow the last one seen, the watcher reads
the genesis hash, and if it changed it sets :attr:`ChainWatcher.replaced`, logs it once, tells its
subscribers that any channel may have changed, and reads nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eth_utils import keccak

from marketplace.chain.identity import ChainIdentity, ChainReplaced
from marketplace.chain.market import Market
from marketplace.errors import FailureLog

log = logging.getLogger("agentmarket.payments.watcher")
#: Seconds between two log lines saying the chain cannot be read (one line each, no traceback).
FAILURE_LOG_INTERVAL = 60.0

#: Longest block range scanned in one ``eth_getLogs``; after a longer gap every cached channel is dropped instead.
MAX_SCAN_BLOCKS = 5_000
#: ``ChannelClosed(uint256,address,uint64)``'s topic: the asset owner ended service.
CLOSED_TOPIC = keccak(text="ChannelClosed(uint256,address,uint64)")

#: A subscriber: ``(touched channel ids or None for "any channel", closed channel ids)``.
Listener = Callable[[set[int] | None, set[int]], None]


class ChainWatcher:
    """The chain's latest block and the channels contract's logs, re-read at most every ``poll_interval`` seconds.

    :meth:`maybe_refresh` is cheap when the view is fresh (one clock read), so the gate calls it on
    every paid call; :meth:`start` adds a background thread that keeps the view fresh without
    traffic. A chain that went backwards (a snapshot reverted, a reorg deeper than the view) or a gap
    longer than :data:`MAX_SCAN_BLOCKS` tells subscribers that any channel may have changed.
    ``clock`` is monotonic seconds, ``wall_clock`` unix seconds. ``identity`` is the chain it watches
    (read at the first refresh unless given); :attr:`replaced` is set once another chain answers.
    """

    def __init__(
        self,
        market: Market,
        poll_interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        identity: ChainIdentity | None = None,
    ) -> None:
        if poll_interval < 0:
            raise ValueError(f"poll_interval must not be negative, got {poll_interval}")
        self.market = market
        self.poll_interval = poll_interval
        self.clock = clock
        self.wall_clock = wall_clock
        self._channels = market.channels.address
        self._listeners: list[Listener] = []
        self._refresh_lock = threading.Lock()
        self._last_block: int | None = None
        self._last_hash = b""
        self._identity = identity
        #: Set once the chain was replaced under the watcher (then it reads nothing more).
        self.replaced: ChainReplaced | None = None
        self._head_timestamp = 0
        self._read_at = float("-inf")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._failures = FailureLog(log, FAILURE_LOG_INTERVAL)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(touched, closed)`` after each refresh that saw channel logs (or lost track)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ the view

    def now(self) -> int:
        """The chain's time in unix seconds, as best known (never behind the wall clock)."""
        if self._last_block is None:  # never read: the wall clock is all there is
            return int(self.wall_clock())
        chain_time = self._head_timestamp + max(self.clock() - self._read_at, 0.0)
        return int(max(chain_time, self.wall_clock()))

    @property
    def head(self) -> tuple[int, int] | None:
        """The latest block read: (number, timestamp in unix seconds); None before the first read."""
        if self._last_block is None:
            return None
        return self._last_block, self._head_timestamp

    @property
    def failure(self) -> str | None:
        """Why the last read of the chain failed (the exception's type name); None when it succeeded."""
        return self._failure

    @property
    def age(self) -> float:
        """Seconds since the view was last read from the chain."""
        return self.clock() - self._read_at

    def maybe_refresh(self) -> None:
        """Refresh when the view is older than ``poll_interval``; if another thread is refreshing, use the
        current view (the first call ever waits for it). While the background thread runs (it refreshes
        twice per interval), callers leave the refresh to it unless it fell behind by a whole interval."""
        running = self._thread is not None and self._thread.is_alive()
        if self.age < self.poll_interval * (2 if running else 1):
            return
        if not self._refresh_lock.acquire(blocking=self._last_block is None):
            return
        try:
            if self.age >= self.poll_interval:
                self._refresh()
        finally:
            self._refresh_lock.release()

    def refresh(self) -> None:
        """Read the latest block and the channel logs since the last one seen, now."""
        with self._refresh_lock:
            self._refresh()

    def _refresh(self) -> None:
        if self.replaced is not None:
            return
        try:
            self._read()
        except Exception as exc:
            self._failure = type(exc).__name__
            raise
        if self._failure is not None:
            self._failure = None
            self._failures.recovered("chain", "the chain can be read again")

    def _read(self) -> None:
        w3 = self.market.chain.w3
        read_at = self.clock()
        block = w3.eth.get_block("latest")
        number, timestamp = block["number"], block["timestamp"]
        touched: set[int] | None = set()
        closed: set[int] = set()
        last = self._last_block
        if self._identity is None:
            self._identity = ChainIdentity.of(self.market.chain)
        elif not self._follows(block) and self._check_replaced():
            return
        if last is not None and (number < last or number - last > MAX_SCAN_BLOCKS):
            touched = None  # the chain went back, or too much happened: anything may have changed
        elif last is not None and number > last:
            logs = w3.eth.get_logs({"address": self._channels, "fromBlock": last + 1, "toBlock": number})
            for entry in logs:
                topics = entry["topics"]
                if len(topics) < 2:
                    continue
                channel_id = int.from_bytes(bytes(topics[1]), "big")
                touched.add(channel_id)
                if bytes(topics[0]) == CLOSED_TOPIC:
                    closed.add(channel_id)
        self._last_block, self._head_timestamp, self._read_at = number, timestamp, read_at
        self._last_hash = bytes(block["hash"])
        if touched is None or touched:
            for listener in self._listeners:
                try:
                    listener(touched, closed)
                except Exception:  # one subscriber's failure must not starve the others
                    log.exception("a chain watcher subscriber failed")

    def _follows(self, block: Any) -> bool:
        """Whether ``block`` (the latest) is the last block seen or its child: the same chain, nothing to check."""
        last = self._last_block
        if last is None or (block["number"] == last and bytes(block["hash"]) == self._last_hash):
            return True
        return block["number"] == last + 1 and bytes(block["parentHash"]) == self._last_hash

    def _check_replaced(self) -> bool:
        """Read the genesis hash; if another chain answers now, record it in :attr:`replaced` and tell subscribers."""
        assert self._identity is not None
        actual = ChainIdentity.of(self.market.chain)
        if actual == self._identity:
            return False
        self.replaced = ChainReplaced.while_serving(self._identity, actual, self.market.chain.rpc_url)
        log.error("%s", self.replaced)
        for listener in self._listeners:
            try:
                listener(None, set())
            except Exception:
                log.exception("a chain watcher subscriber failed")
        return True

    # ------------------------------------------------------------------ background thread

    def start(self) -> None:
        """Keep the view fresh on a background thread (every half ``poll_interval``: never older than one)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.refresh()  # the first view, before any call needs it
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="chain-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        interval = max(self.poll_interval / 2, 0.05)
        while not self._stopping.wait(interval):
            try:
                self.refresh()
            except Exception as exc:  # the last view stays in force; one line per FAILURE_LOG_INTERVAL
                head = "no block yet" if self._last_block is None else f"block {self._last_block}"
                self._failures.failed(
                    "chain", f"cannot read the chain ({type(exc).__name__}); keeping the view of {head}, "
                    f"retrying every {interval:g} s"
                )  # fmt: skip
