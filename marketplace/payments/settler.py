"""The channel settler: claims, for every channel, the prices of the calls the gateway answered.

For each channel of the :class:`~marketplace.payments.voucher_ledger.VoucherLedger` whose answered calls
(``debited``) exceed what was claimed, the settler sends ``PaymentChannels.claim(channelId,
ceiling, totalClaimed = debited, signature)`` from the receiver-authorizer key, under the highest
voucher held: exactly what was served goes into the asset's vault, whatever the payer signed ahead.
It runs every ``interval`` seconds, when woken (a channel was closed on chain), and once more at
shutdown. Claims are allowed until a channel's expiry plus ``CLAIM_WINDOW`` (15 minutes), so calls
answered just before an expiry or a close are still paid: keep ``interval`` well below that.

Every round first checks that the chain is still the one the ledger is bound to: on a chain replaced
under the server (a restarted node keeps chain id and contract addresses, so channel ids and even
voucher signatures would match new channels) the settler claims nothing, and says so once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from marketplace.chain import ContractRevert
from marketplace.chain.identity import ChainIdentity
from marketplace.chain.market import Market
from marketplace.payments.voucher_ledger import ChannelRecord, VoucherLedger

log = logging.getLogger("agentmarket.payments.settler")

#: Gas given to a claim (measured: ~67k; no estimate round trip on the settlement path).
CLAIM_GAS = 150_000

#: Reverts after which nothing of the channel can ever be claimed (recorded as the ledger's ``final``).
FINAL_ERRORS = ("AlreadySettled", "ClaimWindowOver", "UnknownChannel", "NotReceiverAuthorizer")


def chain_identity(market: Market) -> str:
    """What a ledger is bound to: chain id, genesis block hash and channels contract address."""
    return f"{ChainIdentity.of(market.chain)}/channels:{market.channels.address}"


@dataclass(frozen=True)
class ClaimResult:
    """What one settlement round did for one channel (amounts in base units).

    ``outcome``: ``claimed`` (``amount`` went to the vault; ``total`` is claimed in all),
    ``already_claimed`` (the chain already held ``total`` or more), ``final`` (nothing of the channel
    can be claimed any more — settled, past its claim window, unknown, or not this key's; ``detail``
    names the error; recorded and skipped from then on), ``failed`` (``detail`` says why; a revert is
    retried only once more calls were answered, any other error on the next round).
    """

    channel_id: int
    outcome: str
    total: int
    amount: int = 0
    tx_hash: str | None = None
    detail: str = ""


class Settler:
    """Claims the answered calls of every channel on chain: every ``interval`` seconds, when woken, and at stop.

    ``relayer`` must be the channels' ``receiverAuthorizer`` (it pays the gas and alone may claim).
    Pass ``send_lock`` when something else sends transactions from the same account, so that
    nonces do not collide. A close wakes the settler (:meth:`wake`); an expiry does not, so keep
    ``interval`` (seconds) well below ``CLAIM_WINDOW`` (900 s) where channels run out by time.
    """

    def __init__(
        self,
        market: Market,
        ledger: VoucherLedger,
        relayer: LocalAccount,
        interval: float = 30.0,
        *,
        gas: int = CLAIM_GAS,
        send_lock: threading.Lock | None = None,
    ) -> None:
        self.market = market
        self.ledger = ledger
        self.relayer = relayer
        self.interval = interval
        self.gas = gas
        self._send_lock = send_lock or threading.Lock()
        self._round_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._identity = chain_identity(market)
        self._replaced_logged = False
        ledger.bind(self._identity)

    def settle_once(self) -> list[ClaimResult]:
        """Claim every channel whose answered calls exceed what was claimed; one result per channel tried.

        Nothing (an empty list) once the chain is not the one the ledger is bound to.
        """
        with self._round_lock:
            if self._chain_replaced():
                return []
            return [self._settle(entry) for entry in self.ledger.claimable()]

    def _chain_replaced(self) -> bool:
        """Whether another chain answers now (if the chain cannot be read, the claims will say so themselves)."""
        try:
            now = chain_identity(self.market)
        except Exception:
            return False
        if now == self._identity:
            return False
        if not self._replaced_logged:
            self._replaced_logged = True
            left = sum(entry.unclaimed for entry in self.ledger.claimable())
            was, new = ChainIdentity.parse(self._identity), ChainIdentity.parse(now)
            log.error("the chain was replaced (%s answers; the ledger is bound to %s): claiming nothing; %s base units "
                      "of answered calls stay unclaimed in %s", new.short if new else now, was.short if was else
                      self._identity, left, self.ledger.path)  # fmt: skip
        return True

    def wake(self) -> None:
        """Run a round now (e.g. a channel was closed: claim before its window ends) instead of at the interval."""
        self._wake.set()

    def start(self) -> None:
        """Settle every ``interval`` seconds (and when woken) on a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="channel-settler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> list[ClaimResult]:
        """Stop the background thread and settle one last time; returns that last round."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return self.settle_once()

    def __enter__(self) -> Settler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.settle_once()
            except Exception:
                log.exception("channel settlement round failed; retrying in %s s", self.interval)

    def _settle(self, entry: ChannelRecord) -> ClaimResult:
        channel_id, total = entry.channel_id, entry.debited
        try:
            state = self.market.channels.channel(channel_id)
            if state.claimed >= total:
                self.ledger.mark_claimed(channel_id, state.claimed)
                return ClaimResult(channel_id, "already_claimed", state.claimed)
            if state.settled:
                return self._final(entry, "AlreadySettled")
            if state.receiver_authorizer.lower() != self.relayer.address.lower():
                return self._final(entry, "NotReceiverAuthorizer")
            if self.market.chain.timestamp() >= state.claim_deadline:
                return self._final(entry, "ClaimWindowOver")
            with self._send_lock:
                receipt = self.market.channels.claim(
                    self.relayer, channel_id, entry.ceiling, total, entry.signature, gas=self.gas
                )
        except ContractRevert as exc:
            if exc.error in FINAL_ERRORS:
                return self._final(entry, exc.error)
            if exc.error == "ClaimNotIncreasing":  # claimed meanwhile (by this key elsewhere): re-read next round
                self.ledger.mark_claimed(channel_id, int(exc.args_by_name.get("claimed", 0)))
                return ClaimResult(channel_id, "already_claimed", total)
            log.error("claim of channel %s for %s failed: %s", channel_id, total, exc)
            self.ledger.mark_failed(channel_id, total, str(exc))
            return ClaimResult(channel_id, "failed", total, detail=str(exc))
        except Exception as exc:
            log.warning("claim of channel %s for %s failed, will retry: %s", channel_id, total, exc)
            return ClaimResult(channel_id, "failed", total, detail=f"{type(exc).__name__}: {exc}")
        self.ledger.mark_claimed(channel_id, total)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        return ClaimResult(channel_id, "claimed", total, total - state.claimed, tx_hash)

    def _final(self, entry: ChannelRecord, error: str) -> ClaimResult:
        self.ledger.mark_final(entry.channel_id, error)
        log.warning(
            "channel %s can no longer be claimed (%s); %s of its answered calls stay unclaimed",
            entry.channel_id,
            error,
            entry.unclaimed,
        )
        return ClaimResult(entry.channel_id, "final", entry.debited, detail=error)
