"""The client's own count of what it owes on each payment channel, so that a voucher never advances by more
than one call's price, whatever a server asks (issue 12 §6).

Per channel the client keeps ``answered`` (the prices of the calls it got answers for, starting from
what was claimed on chain when it knows nothing else) and ``signed`` (the highest ceiling it signed).
A call signs ``ceiling = max(signed, answered + in flight + price)``; a server asking for more is
refused by the caller (:class:`~marketplace.client.sdk.MarketplaceClient`).

A call whose outcome is unknown — the request went out, then the connection broke or timed out before
the answer was read — counts as **answered**: the server may well have run and debited it, and a client
that did not count it would sign one price less than the server needs from then on, and be refused on
that channel for good. The cost is bounded: each lost answer leaves at most one call's price of ceiling
above the calls the server really answered, and the receiver can still claim only what it served
(``PaymentChannels.claim``'s ``totalClaimed``), so an honest gateway takes nothing for it. Only an error
status from the server, or a request that surely never left (no connection), counts as not answered.

Counts are kept per **scope** — the chain's identity (CAIP-2 chain id and genesis block hash, see
:mod:`marketplace.chain.identity`) and the channels contract — and per **channel identity** — its id, payer,
signer, asset, token and the block that opened it (:meth:`~marketplace.client.sdk.MarketplaceClient.invoke`
builds both). A restarted local node keeps chain id 31337 and the same contract addresses and starts channel
ids at 1 again; keyed by chain id and address alone, the first call on the new channel 1 would sign a
ceiling of the old channel's calls plus one. Keyed this way, a new channel never inherits a count.

A :class:`VoucherBook` lives in memory, or in a small JSON file (one per wallet address, written atomically) so that one
process per call, as the CLI runs, keeps the count between calls. Entries of the earlier format (scopes of
chain id and address only, which cannot tell a restarted chain from the old one) are dropped when the file
is read; those channels start again from what the chain says was claimed.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from marketplace.chain.identity import ChainIdentity
from marketplace.errors import AgentmarketError


@dataclass
class ChannelCount:
    """One channel as this client counts it (base units)."""

    #: Prices of the calls this client got an answer for (plus what was claimed before it started counting).
    answered: int
    #: The highest ceiling this client signed.
    signed: int
    #: Prices of the calls sent and not answered yet (memory only).
    in_flight: int = 0


class VoucherBook:
    """Per ``scope`` (a chain and channels contract, e.g. ``"eip155:31337/genesis:0x…/channels:0x…"``) and
    ``channel`` (the channel's identity, e.g. ``"1/payer:0x…/…/opened:0x<block hash>"``): the client's count;
    thread-safe.

    With ``path`` the counts are loaded from and saved to that JSON file (``{scope: {channel:
    {"answered", "signed"}}}``, amounts as decimal strings), replaced atomically after each change.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, ChannelCount]] = {}
        if path is not None and path.exists():
            self._counts = _load(path)

    def count(self, scope: str, channel: str) -> ChannelCount | None:
        """The channel's count, or None if this book never paid on it."""
        with self._lock:
            found = self._counts.get(scope, {}).get(channel)
            return None if found is None else ChannelCount(found.answered, found.signed, found.in_flight)

    def begin(self, scope: str, channel: str, price: int, claimed_on_chain: int) -> int:
        """Count one more call of ``price`` in flight; returns the ceiling to sign for it (base units).

        ``claimed_on_chain`` starts the count of a channel this book does not know yet.
        """
        with self._lock:
            counts = self._counts.setdefault(scope, {})
            count = counts.get(channel)
            if count is None:
                count = counts[channel] = ChannelCount(claimed_on_chain, claimed_on_chain)
            ceiling = max(count.signed, count.answered + count.in_flight + price)
            count.in_flight += price
            count.signed = ceiling
            self._save()
            return ceiling

    def finish(self, scope: str, channel: str, price: int, *, answered: bool) -> ChannelCount:
        """The call of ``price`` is over: counted as answered (an answer, or an unknown outcome: see the
        module), or not (the server refused or failed it, or the request never left)."""
        with self._lock:
            count = self._counts[scope][channel]
            count.in_flight -= price
            if answered:
                count.answered += price
            self._save()
            return ChannelCount(count.answered, count.signed, count.in_flight)

    def _save(self) -> None:
        if self.path is None:
            return
        body = {
            scope: {key: {"answered": str(c.answered), "signed": str(c.signed)} for key, c in sorted(counts.items())}
            for scope, counts in sorted(self._counts.items())
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(body, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _load(path: Path) -> dict[str, dict[str, ChannelCount]]:
    try:
        body = json.loads(path.read_text())
        return {
            str(scope): {
                str(key): ChannelCount(int(entry["answered"]), int(entry["signed"])) for key, entry in counts.items()
            }
            for scope, counts in body.items()
            if ChainIdentity.parse(str(scope)) is not None  # the earlier format: "<chain id>:<address>"
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AgentmarketError(
            f"{path} is not a voucher book ({type(exc).__name__}: {exc}); move it away to start counting from what "
            "the chain says was claimed"
        ) from None
