"""x402 v2 per-request payments, settled by an in-process facilitator on our own chain.

The x402 SDK does the protocol: an ``x402FacilitatorSync`` with the SDK's exact-EVM facilitator
scheme verifies and settles EIP-3009 ``transferWithAuthorization`` payments in TestUSD, and an
``x402ResourceServerSync`` with the exact-EVM server scheme builds the payment requirements,
matches a payment to them and drives verify/settle. What this module adds:

- :class:`ChainFacilitatorSigner`, the facilitator's signer over *our* :class:`Chain` (the same
  Web3 the rest of the server uses, in process for the embedded chain, JSON-RPC for anvil or a
  node) and the relayer key that pays the gas;
- :class:`X402Payments`, which charges one :class:`Offer` (amount, payTo vault, resource) per
  request and turns every way a payment can fail into a typed error with a sentence a client can
  act on. :meth:`X402Payments.verify` checks a payment without moving money and
  :meth:`X402Payments.settle` moves it; :meth:`X402Payments.run_paid` verifies, runs the request's
  work, then settles; :meth:`X402Payments.charge` verifies and settles;
- what the SDK's exact facilitator leaves out: an authorization may stay valid for at most the
  ``maxTimeoutSeconds`` the server advertised (``validBefore - now <= maxTimeoutSeconds`` plus
  :data:`VALIDITY_SKEW_SECONDS`; the facilitator itself checks ``validBefore >= now + 6`` and
  ``validAfter <= now``), and one authorization pays for one request: a verified authorization is
  reserved, keyed by payer and EIP-3009 nonce, before the request's work runs, so the same
  authorization sent with concurrent requests is refused (:class:`PaymentInFlightError`, HTTP 409)
  instead of running a model twice for one payment. A settled authorization stays known until its
  ``validBefore`` (when the token refuses it anyway); a failed one is released and may pay again;
- a payer's authorizations in flight are held against its balance: a verified authorization is
  accepted only if the payer's balance of the token, read then, covers its amount plus every other
  authorization of that payer (and token) this process is running or settling. A payer holding one
  price who sends N authorizations at once gets one request run and N - 1 refusals (402, reason
  ``invalid_exact_evm_insufficient_balance``), instead of N model runs of which one is paid. The
  balance read and the hold happen under the payer's own lock; an authorization that settles while
  another of its payer's is being checked may be counted twice (a refusal the payer can retry, never
  an unpaid run). Only this process's authorizations are counted: a payer who moves its tokens away
  while its request runs still costs one unpaid run per transfer it makes on chain.

The SDK's FastAPI middleware is not used: it treats an undecodable header as "no payment" and
answers in its own error format. Each route decides when to settle: a download settles before a
single byte of content is sent (a stream cannot be taken back), a model call verifies, runs the
model, and settles before it answers (a failed call costs nothing; no output leaves unpaid).
"""

from __future__ import annotations

import base64
import heapq
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from web3 import Web3
from x402 import x402FacilitatorSync, x402ResourceServerSync
from x402.http import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER
from x402.http.utils import (
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_response_header,
)
from x402.mechanisms.evm import constants as evm
from x402.mechanisms.evm.data_suffix import append_data_suffix
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme
from x402.mechanisms.evm.exact.eip3009_utils import ParsedEIP3009Authorization, parse_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Payload, TransactionReceipt, is_permit2_payload
from x402.mechanisms.evm.utils import hex_to_bytes
from x402.mechanisms.evm.verify import verify_typed_data_strict
from x402.schemas import AssetAmount, PaymentPayload, PaymentRequirements, ResourceConfig, ResourceInfo

from marketplace.chain import Chain, ContractRevert, RawCall
from marketplace.chain.contracts import TestUSD
from marketplace.chain.units import caip2, format_units
from marketplace.errors import AgentmarketError

__all__ = [
    "PAYMENT_REQUIRED_HEADER",
    "PAYMENT_RESPONSE_HEADER",
    "PAYMENT_SIGNATURE_HEADER",
    "SCHEME",
    "ChainFacilitatorSigner",
    "MalformedPaymentError",
    "Offer",
    "PaymentInFlightError",
    "PaymentRequiredError",
    "Settlement",
    "Shortfall",
    "VerifiedPayment",
    "X402Payments",
]

#: The x402 scheme sold here: one exact amount, moved by an EIP-3009 authorization.
SCHEME = "exact"
#: How long a client's signed authorization may stay valid (it signs validBefore = now + this).
DEFAULT_MAX_TIMEOUT_SECONDS = 300
#: Clock skew allowed between a payer and this server on an authorization's lifetime, in seconds.
VALIDITY_SKEW_SECONDS = 15
#: Reason code: the authorization stays valid longer than maxTimeoutSeconds (+ skew) from now.
ERR_VALIDITY_TOO_LONG = "invalid_exact_evm_payload_authorization_validity_too_long"
_RECEIPT_TIMEOUT_SECONDS = 30

#: A sentence for each reason the SDK's exact-EVM facilitator gives for refusing a payment.
_REASONS: dict[str, str] = {
    evm.ERR_RECIPIENT_MISMATCH: "the authorization pays someone other than this asset's vault (payTo)",
    evm.ERR_AUTHORIZATION_VALUE_MISMATCH: "the authorization's value is not the price",
    evm.ERR_VALID_BEFORE_EXPIRED: "the authorization has expired (validBefore is past or within 6 seconds)",
    evm.ERR_VALID_AFTER_FUTURE: "the authorization is not valid yet (validAfter is in the future)",
    evm.ERR_INVALID_SIGNATURE: "the signature is not the payer's signature of this authorization",
    evm.ERR_FAILED_TO_VERIFY_SIGNATURE: "the signature could not be checked",
    evm.ERR_UNDEPLOYED_SMART_WALLET: "the payer is an undeployed smart wallet, which is not supported here",
    evm.ERR_FACTORY_NOT_ALLOWED: "smart-wallet deployment (ERC-6492) is not supported here",
    evm.ERR_NONCE_ALREADY_USED: "this authorization was already used; sign a new one",
    evm.ERR_INSUFFICIENT_BALANCE: "the payer's TestUSD balance is below the price",
    evm.ERR_MISSING_EIP712_DOMAIN: "the payment names no EIP-712 domain for the token",
    evm.ERR_NETWORK_MISMATCH: "the payment is for another network",
    evm.ERR_UNSUPPORTED_SCHEME: f"only the {SCHEME!r} scheme is accepted",
    evm.ERR_TOKEN_NAME_MISMATCH: "the EIP-712 domain name is not the token's",
    evm.ERR_TOKEN_VERSION_MISMATCH: "the EIP-712 domain version is not the token's",
    evm.ERR_EIP3009_NOT_SUPPORTED: "the token does not support EIP-3009",
    evm.ERR_ASSET_NOT_DEPLOYED_CONTRACT: "the payment's asset is not a token contract on this chain",
    evm.ERR_TRANSACTION_SIMULATION_FAILED: "the token rejected the transfer when it was simulated",
    evm.ERR_TRANSACTION_FAILED: "the transfer transaction failed",
    evm.ERR_TRANSFER_EVENT_MISMATCH: "the settlement transaction did not move the price to the vault",
    evm.ERR_SETTLEMENT_PENDING: "the settlement transaction was not confirmed in time",
    ERR_VALIDITY_TOO_LONG: "the authorization stays valid longer than this server's maxTimeoutSeconds",
}
_T = TypeVar("_T")


# ---------------------------------------------------------------------- errors and results


class MalformedPaymentError(AgentmarketError):
    """The PAYMENT-SIGNATURE header is not a decodable x402 payment (HTTP 400)."""


class PaymentRequiredError(AgentmarketError):
    """No acceptable payment came with the request (HTTP 402).

    ``header`` is the PAYMENT-REQUIRED value to send back (base64 JSON naming the price), ``code``
    a machine code, the message a sentence; ``settlement_header`` is a PAYMENT-RESPONSE value when
    a settlement was attempted and failed.
    """

    def __init__(self, code: str, detail: str, header: str, settlement_header: str | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.header, self.settlement_header = code, detail, header, settlement_header

    @property
    def payment_required(self) -> dict[str, Any]:
        """The PAYMENT-REQUIRED value decoded: the x402 v2 ``PaymentRequired`` JSON (for a response body)."""
        return json.loads(base64.b64decode(self.header))

    @property
    def headers(self) -> dict[str, str]:
        """The x402 headers of the 402 response."""
        headers = {PAYMENT_REQUIRED_HEADER: self.header, "Cache-Control": "no-store"}
        if self.settlement_header:
            headers[PAYMENT_RESPONSE_HEADER] = self.settlement_header
        return headers


class PaymentInFlightError(AgentmarketError):
    """The same authorization (payer, EIP-3009 nonce) is paying for another request right now (HTTP 409).

    ``code`` is ``payment_in_flight``; the message says what to do.
    """

    code = "payment_in_flight"


@dataclass(frozen=True)
class Offer:
    """What one request costs: ``amount`` atomic TestUSD units paid to ``pay_to`` for ``resource_url``."""

    amount: int
    pay_to: str
    resource_url: str
    description: str
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True)
class VerifiedPayment:
    """A payment the facilitator verified for ``offer``; nothing has moved until it is settled."""

    offer: Offer
    payload: PaymentPayload
    requirements: PaymentRequirements
    authorization: ParsedEIP3009Authorization | None

    @property
    def payer(self) -> str | None:
        """Who signed the authorization (None for a payload without one)."""
        return Web3.to_checksum_address(self.authorization.from_address) if self.authorization else None

    @property
    def key(self) -> tuple[str, bytes] | None:
        """What identifies the authorization on the token: (payer, EIP-3009 nonce), or None."""
        return _key(self.authorization) if self.authorization else None


@dataclass(frozen=True)
class Settlement:
    """A settled payment: the transfer's transaction, who paid, and the PAYMENT-RESPONSE value."""

    transaction: str
    payer: str
    network: str
    amount: int
    pay_to: str
    header: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (amount as a decimal string), e.g. for a response body."""
        return {
            "scheme": SCHEME,
            "network": self.network,
            "transaction": self.transaction,
            "payer": self.payer,
            "payTo": self.pay_to,
            "amount": str(self.amount),
        }


# ---------------------------------------------------------------------- the facilitator's signer


class ChainFacilitatorSigner:
    """The SDK's ``FacilitatorEvmSigner`` over our :class:`Chain`, sending as ``relayer`` (who pays the gas).

    Reads and transactions go through the chain's own Web3, so the in-process embedded chain works
    like anvil or any node. Reverts surface as :class:`ContractRevert` (whose text contains
    "reverted", which the SDK reads as a contract revert rather than a transport failure); a relayer
    without the ETH for the gas raises :class:`~marketplace.chain.errors.InsufficientFunds` naming it,
    nothing sent (the SDK reports ``transaction_failed`` with that sentence). Transactions take the
    chain's own pipeline (:meth:`Chain.submit <marketplace.chain.chain.Chain.submit>`).
    Transactions are sent one at a time: the nonce is read and used under a lock.
    """

    def __init__(self, chain: Chain, relayer: LocalAccount, send_lock: threading.Lock | None = None) -> None:
        self._chain = chain
        self._relayer = relayer
        self._send_lock = send_lock or threading.Lock()

    @property
    def address(self) -> str:
        """The relayer's address."""
        return self._relayer.address

    def get_addresses(self) -> list[str]:
        """Addresses the facilitator settles from."""
        return [self._relayer.address]

    def get_chain_id(self) -> int:
        """The chain's id."""
        return self._chain.chain_id

    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        """``eth_call`` a function (as the relayer); a revert raises :class:`ContractRevert`."""
        contract = self._chain.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
        return self._chain.call(contract.functions[function_name](*args), sender=self._relayer.address)

    def verify_typed_data(
        self,
        address: str,
        domain: Any,
        types: dict[str, Any],
        primary_type: str,
        message: dict[str, Any],
        signature: bytes,
    ) -> bool:
        """Check an EIP-712 signature as the chain would (ecrecover for EOAs, EIP-1271 for contracts)."""
        return verify_typed_data_strict(self, address, domain, types, primary_type, message, signature)

    def write_contract(
        self,
        address: str,
        abi: list[dict[str, Any]],
        function_name: str,
        *args: Any,
        data_suffix: str | None = None,
    ) -> str:
        """Send a contract call from the relayer; returns the tx hash."""
        contract = self._chain.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
        calldata = contract.encode_abi(function_name, args=list(args))
        if data_suffix:
            calldata = append_data_suffix(calldata, data_suffix)
        return self._send(address, hex_to_bytes(calldata))

    def send_transaction(self, to: str, data: bytes) -> str:
        """Send raw calldata from the relayer; returns the tx hash."""
        return self._send(to, data)

    def wait_for_transaction_receipt(self, tx_hash: str) -> TransactionReceipt:
        """The mined transaction's receipt."""
        receipt = self._chain.wait(tx_hash, timeout=_RECEIPT_TIMEOUT_SECONDS)
        return TransactionReceipt(
            status=evm.TX_STATUS_SUCCESS if receipt["status"] == 1 else 0,
            block_number=receipt["blockNumber"],
            tx_hash=tx_hash,
            logs=list(receipt.get("logs") or []),
        )

    def get_balance(self, address: str, token_address: str) -> int:
        """``address``'s balance of the token (or of the native coin for the zero address)."""
        if not token_address or int(token_address, 16) == 0:
            return self._chain.balance(address)
        return self.read_contract(token_address, evm.BALANCE_OF_ABI, "balanceOf", Web3.to_checksum_address(address))

    def get_code(self, address: str) -> bytes:
        """The code at ``address`` (empty for an EOA)."""
        return bytes(self._chain.w3.eth.get_code(Web3.to_checksum_address(address)))

    def _send(self, to: str, data: bytes) -> str:
        """Send ``data`` to ``to`` from the relayer through the chain's pipeline (:meth:`Chain.submit`:
        estimate, so a revert surfaces before anything is sent, then margin, sign, broadcast).

        Returns the hash at once; :meth:`wait_for_transaction_receipt` waits, so a slow receipt
        leaves the SDK a hash to reconcile against instead of a lost transaction.
        """
        with self._send_lock:
            pending = self._chain.submit(RawCall(self._chain, to, data), self._relayer)
        return "0x" + bytes(pending.hash).hex()


# ---------------------------------------------------------------------- one authorization, one request


@dataclass(frozen=True)
class Shortfall:
    """Why a payer's balance does not cover one more authorization (token base units)."""

    #: The payer's balance of the token, read while its funds were locked.
    balance: int
    #: What this authorization moves.
    amount: int
    #: The sum of the payer's other authorizations in flight here (verified, not yet settled or released).
    in_flight: int
    #: How many those are.
    payments: int


class _Funds:
    """One payer's authorizations in flight for one token: key -> amount, under the payer's own lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[tuple[str, bytes], int] = {}
        self.users = 0  # hold() calls using this record right now (it is dropped once unused and empty)


class _Reservations:
    """The EIP-3009 authorizations, keyed by (payer, nonce), this process is settling or has settled,
    and what each payer has in flight against its balance.

    :meth:`reserve` claims an authorization for one request; :meth:`hold` then counts its amount
    against the payer's balance (per payer and token); :meth:`settled` keeps the authorization until
    its ``validBefore`` (after which the token refuses it anyway, so memory stays bounded by what can
    be settled within ``maxTimeoutSeconds``); :meth:`release` frees it after a failure. Both end its
    hold. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled_at: dict[tuple[str, bytes], bool] = {}  # key -> settled? (False: in flight)
        self._expiries: list[tuple[int, tuple[str, bytes]]] = []  # (validBefore, key) of settled ones
        self._funds: dict[tuple[str, str], _Funds] = {}  # (payer, token) -> what it has in flight
        self._held_by: dict[tuple[str, bytes], tuple[str, str]] = {}  # key -> (payer, token) holding it

    def reserve(self, key: tuple[str, bytes], now: int) -> str | None:
        """Claim ``key``; None when claimed, else ``"in_flight"`` or ``"settled"``."""
        with self._lock:
            while self._expiries and self._expiries[0][0] < now:
                _, expired = heapq.heappop(self._expiries)
                self._settled_at.pop(expired, None)
            state = self._settled_at.get(key)
            if state is not None:
                return "settled" if state else "in_flight"
            self._settled_at[key] = False
            return None

    def hold(
        self, key: tuple[str, bytes], token: str, amount: int, read_balance: Callable[[], int]
    ) -> Shortfall | None:
        """Count a reserved ``key``'s ``amount`` against its payer's balance of ``token``.

        ``read_balance()`` is called under the payer's lock (one payer's checks run one at a time;
        other payers are not held up). None when the balance covers ``amount`` plus the payer's other
        amounts in flight (the amount is then held until :meth:`settled` or :meth:`release`), else the
        :class:`Shortfall`. What ``read_balance`` raises propagates, nothing held.
        """
        payer = (key[0], token.lower())
        with self._lock:
            funds = self._funds.setdefault(payer, _Funds())
            funds.users += 1
        try:
            with funds.lock:
                balance = read_balance()
                in_flight = sum(funds.held.values())
                if balance < in_flight + amount:
                    return Shortfall(balance, amount, in_flight, len(funds.held))
                funds.held[key] = amount
                with self._lock:
                    self._held_by[key] = payer
                return None
        finally:
            with self._lock:
                funds.users -= 1
                self._forget_if_unused(payer, funds)

    def settled(self, key: tuple[str, bytes], valid_before: int) -> None:
        """Remember ``key`` as settled until ``valid_before`` (unix seconds); its amount is no longer held
        (the balance now shows it)."""
        self._unhold(key)
        with self._lock:
            self._settled_at[key] = True
            heapq.heappush(self._expiries, (valid_before, key))

    def release(self, key: tuple[str, bytes]) -> None:
        """Free an in-flight ``key`` and its hold (a settled one stays known)."""
        self._unhold(key)
        with self._lock:
            if self._settled_at.get(key) is False:
                del self._settled_at[key]

    def held(self, payer: str, token: str) -> int:
        """What ``payer`` has in flight in ``token`` (base units)."""
        with self._lock:
            funds = self._funds.get((payer.lower(), token.lower()))
        if funds is None:
            return 0
        with funds.lock:
            return sum(funds.held.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._settled_at)

    def _unhold(self, key: tuple[str, bytes]) -> None:
        with self._lock:
            payer = self._held_by.pop(key, None)
            funds = self._funds.get(payer) if payer is not None else None
        if payer is None or funds is None:
            return
        with funds.lock:  # (waits for a balance read of this payer under way: it counted this amount)
            funds.held.pop(key, None)
        with self._lock:
            self._forget_if_unused(payer, funds)

    def _forget_if_unused(self, payer: tuple[str, str], funds: _Funds) -> None:
        """Drop ``payer``'s record when nothing is held or being checked (call with ``_lock`` held)."""
        if funds.users == 0 and not funds.held and self._funds.get(payer) is funds:
            del self._funds[payer]


def _key(authorization: ParsedEIP3009Authorization) -> tuple[str, bytes]:
    return authorization.from_address.lower(), bytes(authorization.nonce)


# ---------------------------------------------------------------------- the payment service


class X402Payments:
    """Sells per-request access over x402 v2: exact scheme, EIP-3009 on TestUSD, network ``eip155:<chain id>``.

    Every payment is settled on chain by the in-process facilitator (the relayer pays the gas)
    before :meth:`charge` returns, so a caller that got a :class:`Settlement` has paid. An
    authorization valid for longer than ``max_timeout_seconds`` (+ :data:`VALIDITY_SKEW_SECONDS`)
    is refused, one authorization pays for one request at a time, and a payer's authorizations in
    flight must fit its balance together (see the module docstring).
    """

    def __init__(
        self,
        chain: Chain,
        token: TestUSD,
        relayer: LocalAccount,
        *,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
        send_lock: threading.Lock | None = None,
    ) -> None:
        self.network = caip2(chain.chain_id)
        self.token = token
        self.max_timeout_seconds = max_timeout_seconds
        self.signer = ChainFacilitatorSigner(chain, relayer, send_lock)
        self.facilitator = x402FacilitatorSync().register([self.network], ExactEvmFacilitatorScheme(self.signer))
        self.server = x402ResourceServerSync(self.facilitator).register(self.network, ExactEvmServerScheme())
        self.server.initialize()
        self._reservations = _Reservations()

    def requirements(self, offer: Offer) -> list[PaymentRequirements]:
        """The PaymentRequirements (one) a client must satisfy to buy ``offer``."""
        domain = self.token.domain
        price = AssetAmount(
            amount=str(offer.amount),
            asset=self.token.address,
            extra={"name": domain.name, "version": domain.version},
        )
        config = ResourceConfig(
            scheme=SCHEME,
            network=self.network,
            pay_to=Web3.to_checksum_address(offer.pay_to),
            price=price,
            max_timeout_seconds=self.max_timeout_seconds,
        )
        return self.server.build_payment_requirements(config)

    def payment_required_header(self, offer: Offer, error: str | None = None) -> str:
        """The PAYMENT-REQUIRED header value (base64 JSON, x402Version 2) for ``offer``."""
        resource = ResourceInfo(url=offer.resource_url, description=offer.description, mime_type=offer.mime_type)
        required = self.server.create_payment_required_response(self.requirements(offer), resource, error)
        return encode_payment_required_header(required)

    def charge(self, offer: Offer, payment_header: str | None) -> Settlement:
        """Verify and settle the payment in ``payment_header`` for ``offer`` (see :meth:`verify`, :meth:`settle`)."""
        return self.settle(self.verify(offer, payment_header))

    def run_paid(self, offer: Offer, payment_header: str | None, work: Callable[[], _T]) -> tuple[_T, Settlement]:
        """Verify (and reserve) the payment, run ``work``, then settle; returns (work's result, settlement).

        If ``work`` raises, the payment is released unsettled (nothing moves) and the exception
        propagates. Raises what :meth:`verify` and :meth:`settle` raise.
        """
        payment = self.verify(offer, payment_header)
        try:
            result = work()
        except BaseException:
            self.release(payment)
            raise
        return result, self.settle(payment)

    def verify(self, offer: Offer, payment_header: str | None) -> VerifiedPayment:
        """Check the payment in ``payment_header`` against ``offer`` with the facilitator and reserve it.

        Nothing moves yet; the caller must :meth:`settle` or :meth:`release` the result. Raises
        :class:`MalformedPaymentError` when the header cannot be decoded, :class:`PaymentRequiredError`
        when it is missing or the payment is refused (wrong amount or payTo, valid too long or
        expired, bad signature, used nonce, insufficient balance — counting the payer's other
        authorizations in flight here), and :class:`PaymentInFlightError` when the same authorization
        is paying for another request right now.
        """
        if not payment_header or not payment_header.strip():
            raise PaymentRequiredError(
                "payment_required",
                f"this costs {format_units(offer.amount)} tUSD per request, paid with x402 (exact scheme, TestUSD on "
                f"{self.network}) to {offer.pay_to}; see the {PAYMENT_REQUIRED_HEADER} header",
                self.payment_required_header(offer, "Payment required"),
            )
        payload = _decode(payment_header)
        if not isinstance(payload, PaymentPayload):
            raise self._refused(offer, "unsupported_x402_version", "only x402 version 2 payments are accepted")
        authorization = _eip3009_authorization(payload)
        now = int(time.time())
        if authorization is not None:
            lifetime = authorization.valid_before - now
            if lifetime > self.max_timeout_seconds + VALIDITY_SKEW_SECONDS:
                detail = (
                    f"payment refused: the authorization stays valid for {lifetime} s (validBefore "
                    f"{authorization.valid_before}), longer than the {self.max_timeout_seconds} s this server allows "
                    f"(maxTimeoutSeconds); sign one that expires sooner ({ERR_VALIDITY_TOO_LONG})"
                )
                raise self._refused(offer, "payment_invalid", detail, ERR_VALIDITY_TOO_LONG)

        requirements = self.server.find_matching_requirements(self.requirements(offer), payload)
        if requirements is None:
            raise self._refused(
                offer,
                "payment_mismatch",
                f"the payment's accepted requirements are not this resource's (want {SCHEME} on {self.network}: "
                f"{offer.amount} units of {self.token.address} to {offer.pay_to})",
            )

        verified = self.server.verify_payment(payload, requirements)
        if not verified.is_valid:
            reason = self._diagnose(verified.invalid_reason or "invalid_payment", authorization)
            raise self._refused(offer, "payment_invalid", _explain(reason), reason)
        payment = VerifiedPayment(offer, payload, requirements, authorization)
        if payment.key is not None:
            state = self._reservations.reserve(payment.key, now)
            if state == "in_flight":
                raise PaymentInFlightError(
                    "this authorization is paying for another request right now; one authorization pays for "
                    "one request: sign a new one for this request"
                )
            if state == "settled":
                reason = evm.ERR_NONCE_ALREADY_USED
                raise self._refused(offer, "payment_invalid", _explain(reason), reason)
            self._hold(payment)
        return payment

    def _hold(self, payment: VerifiedPayment) -> None:
        """Hold a reserved payment's amount against its payer's balance, or release it and refuse it (402)."""
        if payment.key is None or payment.authorization is None:
            return  # (no EIP-3009 authorization: the facilitator refused it already)
        payer, token = payment.authorization.from_address, payment.requirements.asset
        try:
            shortfall = self._reservations.hold(
                payment.key, token, payment.authorization.value, lambda: self.signer.get_balance(payer, token)
            )
        except BaseException:
            self.release(payment)
            raise
        if shortfall is None:
            return
        self.release(payment)
        reason = evm.ERR_INSUFFICIENT_BALANCE
        detail = (
            f"payment refused: the payer's balance, {format_units(shortfall.balance)} tUSD, does not cover this "
            f"payment of {format_units(shortfall.amount)} tUSD on top of its {shortfall.payments} payment(s) in "
            f"flight on this server ({format_units(shortfall.in_flight)} tUSD); wait for them to finish, or add "
            f"funds ({reason})"
        )
        raise self._refused(payment.offer, "payment_invalid", detail, reason)

    def release(self, payment: VerifiedPayment) -> None:
        """Give up a verified payment without settling it: its authorization may pay again."""
        if payment.key is not None:
            self._reservations.release(payment.key)

    def settle(self, payment: VerifiedPayment) -> Settlement:
        """Settle a verified payment on chain (the relayer pays the gas); returns once the transfer is mined.

        A settled authorization stays reserved until its ``validBefore``; a failed one is released.
        Raises :class:`PaymentRequiredError` when the settlement fails (e.g. the same authorization
        was settled meanwhile, or the payer's balance fell below the price).
        """
        offer = payment.offer
        try:
            settled = self.server.settle_payment(payment.payload, payment.requirements)
        except BaseException:
            self.release(payment)
            raise
        if not settled.success:
            self.release(payment)
            reason = self._diagnose(settled.error_reason or "settlement_failed", payment.authorization)
            raise self._refused(
                offer,
                "settlement_failed",
                _explain(reason),
                reason,
                settlement_header=encode_payment_response_header(settled),
            )
        if payment.key is not None and payment.authorization is not None:
            self._reservations.settled(payment.key, payment.authorization.valid_before)
        return Settlement(
            transaction=settled.transaction,
            payer=Web3.to_checksum_address(settled.payer or payment.payer or ""),
            network=settled.network,
            amount=offer.amount,
            pay_to=Web3.to_checksum_address(offer.pay_to),
            header=encode_payment_response_header(settled),
        )

    def _refused(
        self,
        offer: Offer,
        code: str,
        detail: str,
        reason: str | None = None,
        *,
        settlement_header: str | None = None,
    ) -> PaymentRequiredError:
        header = self.payment_required_header(offer, reason or code)
        return PaymentRequiredError(code, detail, header, settlement_header)

    def _diagnose(self, reason: str, authorization: ParsedEIP3009Authorization | None) -> str:
        """``reason``, made specific when it is a vague simulation or transaction failure.

        Local chains have no Multicall3, so the SDK's own diagnosis cannot run: ask the token.
        """
        vague = (evm.ERR_TRANSACTION_SIMULATION_FAILED, evm.ERR_TRANSACTION_FAILED)
        if reason not in vague or authorization is None:
            return reason
        try:
            if self.token.authorization_state(authorization.from_address, authorization.nonce):
                return evm.ERR_NONCE_ALREADY_USED
            if self.token.balance_of(authorization.from_address) < authorization.value:
                return evm.ERR_INSUFFICIENT_BALANCE
        except ContractRevert:
            pass
        return reason


def _explain(reason: str) -> str:
    """A sentence for a reason the SDK gives for refusing a payment."""
    if reason.startswith(("permit2_", "invalid_permit2")):
        sentence = "Permit2 payments are not accepted here; sign an EIP-3009 authorization"
    else:
        sentence = _REASONS.get(reason, "the payment was refused")
    return f"payment refused: {sentence} ({reason})"


def _decode(header: str) -> Any:
    """The SDK's decoding of a PAYMENT-SIGNATURE value; anything undecodable is MalformedPaymentError."""
    try:
        return decode_payment_signature_header(header)
    except (ValueError, TypeError, AttributeError):  # base64, UTF-8, JSON and schema errors are ValueErrors
        raise MalformedPaymentError(
            f"the {PAYMENT_SIGNATURE_HEADER} header is not base64-encoded x402 payment JSON"
        ) from None


def _eip3009_authorization(payload: PaymentPayload) -> ParsedEIP3009Authorization | None:
    """The payload's EIP-3009 authorization, checked for shape (None for a Permit2 payload, which
    the facilitator refuses on its own)."""
    if is_permit2_payload(payload.payload):
        return None
    try:
        exact = ExactEIP3009Payload.from_dict(payload.payload)
        parsed = parse_eip3009_authorization(exact.authorization)
        signature = hex_to_bytes(exact.signature or "")
    except (ValueError, TypeError, AttributeError):
        parsed, signature = None, b""
    if parsed is None or not signature or not Web3.is_address(parsed.from_address) or not Web3.is_address(parsed.to):
        raise MalformedPaymentError(
            "the payment's EIP-3009 authorization is incomplete: it needs from and to addresses, integer "
            "value, validAfter and validBefore, a 32-byte nonce and a hex signature"
        )
    return parsed
