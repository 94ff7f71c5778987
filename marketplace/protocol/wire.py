"""The HTTP API's request and response bodies, shared by the server (its routes' models) and the SDK (which
validates every answer into them): pydantic v2 models, no I/O.

Money is a decimal string of base units on the wire (the token's smallest unit, 6 decimals for tUSD), never
a JSON number (which loses precision past 2**53): a :data:`BaseUnits` field reads such a string into an
``int`` and writes it back as the same string, so callers never convert by hand. Names in camelCase
(the payment objects' keys) are field aliases; ``model_dump(mode="json", by_alias=True)`` gives the body as
the server sends it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError, core_schema

#: Longest decimal string of base units read (a uint256 has at most 78 digits).
_MAX_DIGITS = 78
#: An EVM address as the API takes it (0x and 40 hex digits, any case).
ADDRESS = r"^0x[0-9a-fA-F]{40}$"


def _base_units(value: object) -> int:
    """A non-negative amount of base units from its decimal string (or an int, built in this process)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and 0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"an amount must be a decimal string of at most {_MAX_DIGITS} digits (base units)")


#: An amount in base units of a token: a decimal string on the wire, an ``int`` in Python.
BaseUnits = Annotated[
    int,
    PlainValidator(_base_units),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string"}),
]


class _Camel(BaseModel):
    """A payment object: camelCase keys on the wire (aliases), snake_case attributes."""

    model_config = ConfigDict(populate_by_name=True)


# ---------------------------------------------------------------------- errors and health


class _OpenObject:
    """Field metadata: the field holds one of ``models`` (the first that validates) but the OpenAPI document shows
    an open JSON object, as it always did (the operations' schemas stay as they were). A field missing or wrong
    inside the object is named in the error (e.g. ``receiverAuthorizer: Field required``), from the model it came
    closest to."""

    def __init__(self, *models: type[BaseModel]) -> None:
        self.models = models

    def validate(self, value: object) -> BaseModel:
        """``value`` as the first of :attr:`models` it validates as (ValueError naming the field otherwise)."""
        if isinstance(value, self.models):
            return value
        attempts: list[list[ErrorDetails]] = []
        for model in self.models:
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                attempts.append(exc.errors(include_url=False, include_input=False))
        error = min(attempts, key=len)[0]  # what the closest model lacks
        where = ".".join(str(part) for part in error["loc"]) or "(the object)"
        raise PydanticCustomError("nested", "{where}: {msg}", {"where": where, "msg": error["msg"]})

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        dump = core_schema.plain_serializer_function_ser_schema(lambda m: m.model_dump(mode="json", by_alias=True))
        return core_schema.no_info_plain_validator_function(self.validate, serialization=dump)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "object", "additionalProperties": True}


class ErrorBody(BaseModel):
    """Every error response: a machine code and a human sentence."""

    error: str
    detail: str


class Health(BaseModel):
    """Liveness and how fresh the read model is."""

    status: str
    chain_id: int
    head_block: int
    indexed_block: int
    indexer_lag: int


class ChainDown(BaseModel):
    """503 from /healthz: the chain's node cannot be reached; what the server saw of it last."""

    error: str
    detail: str
    #: ``chain_down``.
    status: str
    chain_id: int
    #: The JSON-RPC URL the server reads the chain from.
    rpc_url: str
    #: The latest block the server read before the chain went away (None if it never read one).
    last_head_block: int | None
    #: That block's timestamp (unix seconds).
    last_head_timestamp: int | None


# ---------------------------------------------------------------------- login (EIP-4361)


class NonceRequest(BaseModel):
    """Who wants to sign in."""

    address: str = Field(pattern=ADDRESS)


class NonceResponse(BaseModel):
    """A single-use nonce and the EIP-4361 message to sign with it (expires_at: Unix seconds)."""

    nonce: str
    message: str
    expires_at: int


class VerifyRequest(BaseModel):
    """The signed EIP-4361 message (EIP-191 personal_sign signature, 65 bytes hex)."""

    message: str = Field(max_length=4096)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class TokenResponse(BaseModel):
    """A bearer token bound to the address that signed in (expires_at: Unix seconds)."""

    token: str
    address: str
    expires_at: int


# ---------------------------------------------------------------------- catalog


class AssetSummary(BaseModel):
    """An asset in a listing."""

    asset_id: int
    kind: str
    owner: str
    token: str
    #: Price of a license (dataset) or of one call (model), in base units of ``token``.
    price: BaseUnits
    license_duration: int
    version: int
    listed: bool
    content_hash: str
    uri: str
    vault: str
    parents: list[int]
    #: True when this server holds the owner's upload of the current version: an asset whose content is
    #: not here cannot be downloaded from this server, even if it is listed.
    content_uploaded: bool


class AssetPage(BaseModel):
    """One page of a listing."""

    items: list[AssetSummary]
    total: int
    limit: int
    offset: int


class Payee(BaseModel):
    """A vault payee and its share (bps of everything the vault receives, fee included)."""

    account: str
    share_bps: float
    is_asset_vault: bool
    parent_asset_id: int | None


class Rating(BaseModel):
    """Paid-for feedback summary: how many raters, and their average on the [0, 100] scale (null if none)."""

    count: int
    average: float | None


class AssetDetail(AssetSummary):
    """An asset with its split, lineage, revenue, sales and ratings."""

    payees: list[Payee]
    children: list[int]
    #: Everything the asset's vault received, in base units of ``token``.
    revenue_received: BaseUnits
    licenses_sold: int
    rating: Rating


class AgentIdentity(BaseModel):
    """An ERC-8004 agent."""

    agent_id: int
    owner: str
    uri: str
    wallet: str | None
    metadata: dict[str, str]


class Uploaded(BaseModel):
    """What the server stored."""

    asset_id: int
    #: The asset version this upload is the content of (the one on chain when the upload began).
    version: int
    sha256: str
    size: int


class UploadResult(Uploaded):
    """What :meth:`~marketplace.client.sdk.MarketplaceClient.upload` returns: the server's record, and whether
    the asset is listed on chain now (never sent by the server)."""

    listed: bool


# ---------------------------------------------------------------------- earnings and stats


class Earning(BaseModel):
    """An account's place in one vault, for one token (base units): what it can claim now, what releases
    up the lineage would add, and what it was already sent."""

    asset_id: int
    vault: str
    token: str
    share_bps: float
    #: What the vault would send the account now.
    claimable: BaseUnits
    #: What releasing every vault between a paid asset and this one (children first, each vault's floor
    #: rounding at every hop) would add to ``claimable``: a withdrawal gets ``claimable + waiting``.
    waiting: BaseUnits
    released: BaseUnits


class TokenEarnings(BaseModel):
    """An account's earnings in one token, over every vault (base units)."""

    token: str
    claimable: BaseUnits
    waiting: BaseUnits
    released: BaseUnits


class Earnings(BaseModel):
    """An account's earnings across every vault it is a payee of, one entry per vault and token that
    reaches it (every vault's own token always), computed on chain now with the royalties waiting up
    the lineage."""

    address: str
    #: The deployment's payment token, which ``total_*`` are in.
    token: str
    #: Base units of ``token``, as the three below.
    total_claimable: BaseUnits
    total_waiting: BaseUnits
    total_released: BaseUnits
    #: Per token, every token included.
    totals: list[TokenEarnings]
    vaults: list[Earning]
    #: Transactions a withdrawal would send now (vault-to-vault releases up the lineage, then to the account).
    pending_releases: int
    #: False when the lineage walk stopped at its bound or a vault's token could not be read: more may wait.
    lineage_complete: bool


class AssetRevenue(BaseModel):
    """Revenue an asset's vault received."""

    asset_id: int
    uri: str
    #: Base units of the payment token.
    revenue_received: BaseUnits


class Stats(BaseModel):
    """Marketplace-wide figures."""

    assets: int
    agents: int
    licenses_sold: int
    #: Amounts in base units of the payment token, as every amount below.
    license_volume: BaseUnits
    channel_volume: BaseUnits
    revenue_received: BaseUnits
    #: Per payee address, what vaults released to it.
    released_by_payee: dict[str, BaseUnits]
    top_assets: list[AssetRevenue]


# ---------------------------------------------------------------------- payments


class VoucherTerms(_Camel):
    """How a channel voucher is signed: its EIP-712 primary type, domain and types."""

    primary_type: str = Field(alias="primaryType")
    #: The EIP-712 domain (name, version, chainId, verifyingContract).
    domain: dict[str, Any]
    types: dict[str, list[dict[str, str]]]
    #: What ``maxClaimableAmount`` means, in words.
    max_claimable_amount: str = Field(alias="maxClaimableAmount")


class ChannelTerms(_Camel):
    """What a payer must know before opening a channel with a gateway, for any asset."""

    scheme: str
    #: The request header a voucher goes in.
    header: str
    header_format: str = Field(alias="headerFormat")
    #: CAIP-2 id, ``eip155:<chainId>``.
    network: str
    chain_id: int = Field(alias="chainId")
    #: The channels contract's address.
    channels: str
    #: The key the gateway claims with: a channel must name it as its ``receiverAuthorizer``.
    receiver_authorizer: str = Field(alias="receiverAuthorizer")
    #: Seconds after a channel's expiry during which the gateway may still claim.
    claim_window_seconds: int = Field(alias="claimWindowSeconds")
    #: Seconds a channel must have left before its expiry for a call to be taken on it.
    min_seconds_to_expiry: int = Field(alias="minSecondsToExpiry")
    voucher: VoucherTerms


class PaymentTerms(BaseModel):
    """How this gateway is paid for metered calls."""

    #: Payment channels: the channels contract, the ``receiverAuthorizer`` a channel must name (the
    #: key this gateway claims with), the claim window, the expiry margin, the voucher's EIP-712 types.
    payment_channel: Annotated[ChannelTerms, _OpenObject(ChannelTerms)]
    #: The model assets this gateway runs (ascending ids): a channel for any other asset would pay for calls
    #: this gateway answers 404 ``model_not_served``.
    models: list[int]


class ChannelReceipt(_Camel):
    """What a call paid with a channel voucher cost, and what the channel has left (amounts in base units of
    the channel's token)."""

    channel_id: int = Field(alias="channelId")
    asset_id: int = Field(alias="assetId")
    #: This call's price.
    price: BaseUnits
    #: The ceiling of the voucher this call came with.
    max_claimable_amount: BaseUnits = Field(alias="maxClaimableAmount")
    #: The highest ceiling the gateway holds on the channel.
    highest_voucher: BaseUnits = Field(alias="highestVoucher")
    #: Every answered call's price on the channel so far, this one included.
    debited: BaseUnits
    #: Calls answered on the channel so far.
    calls: int
    deposit: BaseUnits
    #: What the deposit still covers beyond the calls answered.
    deposit_left: BaseUnits = Field(alias="depositLeft")
    #: How many more calls at this price the deposit covers.
    calls_left: int = Field(alias="callsLeft")


class X402Settlement(_Camel):
    """A call paid with x402 and settled on chain: the transfer's transaction, who paid whom, how much (base
    units of the asset's token)."""

    scheme: str
    #: CAIP-2 id, ``eip155:<chainId>``.
    network: str
    transaction: str
    payer: str
    pay_to: str = Field(alias="payTo")
    amount: BaseUnits


class InvokeRequest(BaseModel):
    """The model's input (any JSON the model's handler accepts)."""

    input: Any


class InvokeResponse(BaseModel):
    """The model's output and what the call cost (a channel receipt, or an x402 settlement)."""

    output: Any
    payment: Annotated[ChannelReceipt | X402Settlement, _OpenObject(ChannelReceipt, X402Settlement)]


class InvokePaymentRequired(BaseModel):
    """402: how to pay for a call, by payment channel (``requirements``) or by x402 (``x402``)."""

    error: str
    detail: str
    #: Why the payment was refused (``payment_missing``, a channel refusal, or an x402 code).
    reason: str
    #: How to pay with a channel voucher in ``X-Payment-Channel`` (plus a ``channel`` entry once it is known).
    requirements: dict[str, Any]
    #: The x402 v2 PaymentRequired (as in the PAYMENT-REQUIRED header); absent when x402 cannot pay the asset.
    x402: dict[str, Any] | None = None
