"""Marketplace actions as tools: one pydantic argument model per tool is at once the LLM function spec
(OpenAI ``tools=[...]``), the MCP tool schema and the input validator.

``run_tool`` validates (``BadArguments``), looks up (``UnknownTool``), lets the wallet check the budget
(``OverBudget``) before anything is signed, and returns a pydantic result or raises a typed error.

Whatever a model asks for goes through the guard: every tool that pays calls a payment method of the
agent's :class:`~agents.wallet.AgentWallet` (which runs it through ``AgentWallet._pay``, the budget check),
and no tool calls a paying method of the SDK client (``buy``, ``open_channel``, ``invoke``, ``download_x402``):
the client the tools read and publish with is the wallet's own (``ToolContext.client``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.errors import ActionRefused, BadArguments, PaymentRefused, UnknownTool, translate
from agents.wallet import AgentWallet, AuditLedger
from marketplace.chain import ContractRevert
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import BPS
from marketplace.client import ApiClientError, MarketplaceClient, PublishIncomplete

AssetId = Field(ge=1, le=2**63 - 1, description="Asset id in the marketplace catalog")


class Args(BaseModel):
    """Base of every tool's arguments: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ToolContext:
    """What tools act with: the agent's wallet (its client, budget guard and ledger) and a download folder."""

    wallet: AgentWallet
    download_dir: Path

    @property
    def client(self) -> MarketplaceClient:
        """The wallet's SDK client, for what costs no tokens (reads, licensed downloads, publishing, ratings);
        payments go through the wallet's methods."""
        return self.wallet.client

    @property
    def ledger(self) -> AuditLedger:
        """The wallet's audit ledger."""
        return self.wallet.ledger


@dataclass(frozen=True)
class Tool:
    """A named action: description, argument model, and ``function(context, args) -> result``.

    ``function`` is annotated with the pydantic model it returns: that model is the tool's result schema
    (the MCP ``outputSchema``), and every result is checked against it (``result``).
    """

    name: str
    description: str
    args: type[Args]
    function: Callable[[ToolContext, Any], BaseModel]

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return self.args.model_json_schema()

    def result_model(self) -> type[BaseModel]:
        """The pydantic model ``function`` returns (its return annotation).

        Raises ``TypeError`` if the function is not annotated with a pydantic model.
        """
        returned = get_type_hints(self.function).get("return")
        if not (isinstance(returned, type) and issubclass(returned, BaseModel)):
            raise TypeError(f"tool {self.name}: {self.function.__name__} must be annotated to return a pydantic model")
        return returned

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of the tool's result, as serialized (``result(...).model_dump(mode="json")``)."""
        return self.result_model().model_json_schema(mode="serialization")

    def result(self, value: BaseModel | dict[str, Any]) -> BaseModel:
        """``value`` as the tool's result model (validated if it is not one already; ``ValidationError`` if
        it does not fit), so that what a client receives always matches ``output_schema``."""
        model = self.result_model()
        return value if type(value) is model else model.model_validate(value, from_attributes=True)

    def openai_spec(self) -> dict[str, Any]:
        """An OpenAI-compatible function tool."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters()}
        return {"type": "function", "function": function}

    def mcp_spec(self) -> dict[str, Any]:
        """An MCP tool description: ``name``, ``description``, ``inputSchema`` and ``outputSchema``."""
        return {"name": self.name, "description": self.description, "inputSchema": self.parameters(),
                "outputSchema": self.output_schema()}  # fmt: skip


# ---------------------------------------------------------------------- argument and result models


class SearchArgs(Args):
    kind: Literal["dataset", "model"] | None = Field(None, description="Only datasets or only models")
    query: str | None = Field(None, max_length=200, description="Text searched in the asset URI")
    min_price: int | None = Field(None, ge=0, le=10**30, description="Lowest price, tUSD base units")
    max_price: int | None = Field(None, ge=0, le=10**30, description="Highest price, tUSD base units")
    limit: int = Field(10, ge=1, le=50, description="Most results to return")


class AssetArgs(Args):
    asset_id: int = AssetId


class BuyArgs(Args):
    asset_id: int = AssetId
    max_price: int | None = Field(None, ge=0, le=10**30, description="Refuse if the price is above this (base units)")


class ChannelArgs(Args):
    asset_id: int = Field(ge=1, le=2**63 - 1, description="The model to open a payment channel for")
    deposit: int = Field(ge=1, le=10**30, description="tUSD base units to lock for metered calls")
    ttl_seconds: int = Field(3600, ge=60, le=30 * 86400, description="Channel lifetime")


class InvokeArgs(Args):
    model_id: int = AssetId
    input: Any = Field(description="The model's input (any JSON value)")
    channel_id: int | None = Field(None, ge=1, description="Channel to pay from (default: this agent's open one)")


class NoArgs(Args):
    pass


class RateArgs(Args):
    asset_id: int = AssetId
    value: int = Field(ge=0, le=100, description="Score from 0 (useless) to 100 (excellent)")
    tag: str = Field("", max_length=64, description="A short label for the rating")


class ParentShare(Args):
    asset_id: int = AssetId
    share_bps: int = Field(ge=1, le=BPS, description="Royalty to the parent, in basis points")


class PublishArgs(Args):
    content: str = Field(min_length=1, max_length=1_000_000, description="The asset's content (text)")
    price: int = Field(ge=0, le=10**30, description="License or per-call price in tUSD base units")
    kind: Literal["dataset", "model"] = "dataset"
    uri: str = Field("", max_length=200, description="Where the asset is described (default: its hash)")
    parents: list[ParentShare] = Field(default_factory=list, max_length=8, description="Upstream assets")


class CatalogItem(BaseModel):
    """One asset in the catalog, as the marketplace API lists it (amounts are decimal strings of base units).

    Fields the API adds later pass through unchanged (``additionalProperties`` in the schema)."""

    model_config = ConfigDict(extra="allow")

    asset_id: int
    kind: str
    price: str


class CatalogPage(BaseModel):
    """A page of the catalog: ``items`` and the API's paging fields (``total``, ``limit``, ``offset``)."""

    model_config = ConfigDict(extra="allow")

    items: list[CatalogItem]


class PaymentResult(BaseModel):
    asset_id: int
    amount: int
    kind: str
    ref: str
    remaining_budget: int


class ChannelResult(PaymentResult):
    channel_id: int


class DownloadResult(BaseModel):
    asset_id: int
    path: str
    size: int
    sha256: str
    preview: str


class InvokeResult(BaseModel):
    model_id: int
    channel_id: int
    output: Any
    paid: int
    channel_remaining: int


class BalanceResult(BaseModel):
    address: str
    balance: int
    spent_this_run: int
    locked_in_channels: int
    remaining_budget: int
    run_cap: int
    asset_cap: int
    call_ceiling: int


class RateResult(BaseModel):
    asset_id: int
    value: int
    tx_hash: str


class PublishResult(BaseModel):
    asset_id: int
    sha256: str


# ---------------------------------------------------------------------- functions


def _api(call: Callable[[], Any], *, payment: bool = False) -> Any:
    try:
        return call()
    except (ApiClientError, ContractRevert) as exc:
        raise translate(exc, payment=payment) from exc


def search_assets(ctx: ToolContext, args: SearchArgs) -> CatalogPage:
    page = _api(lambda: ctx.client.assets(kind=args.kind, q=args.query, min_price=args.min_price,
                                          max_price=args.max_price, limit=args.limit))  # fmt: skip
    return CatalogPage.model_validate(page.model_dump(mode="json"))


def get_asset(ctx: ToolContext, args: AssetArgs) -> CatalogItem:
    return CatalogItem.model_validate(_api(lambda: ctx.client.asset(args.asset_id)).model_dump(mode="json"))


def buy_license(ctx: ToolContext, args: BuyArgs) -> PaymentResult:
    entry = ctx.wallet.buy_license(args.asset_id, args.max_price)
    return PaymentResult(asset_id=entry.asset_id, amount=entry.amount, kind=entry.kind, ref=entry.ref,
                         remaining_budget=ctx.wallet.guard.remaining)  # fmt: skip


def download(ctx: ToolContext, args: AssetArgs) -> DownloadResult:
    data = _api(lambda: ctx.client.download(args.asset_id), payment=True)
    ctx.download_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.download_dir / f"asset-{args.asset_id}.bin"
    path.write_bytes(data)
    preview = data[:200].decode("utf-8", "replace")
    return DownloadResult(asset_id=args.asset_id, path=str(path), size=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), preview=preview)  # fmt: skip


def open_channel(ctx: ToolContext, args: ChannelArgs) -> ChannelResult:
    entry = ctx.wallet.open_channel(args.asset_id, args.deposit, args.ttl_seconds)
    assert entry.channel_id is not None
    return ChannelResult(asset_id=entry.asset_id, amount=entry.amount, kind=entry.kind, ref=entry.ref,
                         remaining_budget=ctx.wallet.guard.remaining, channel_id=entry.channel_id)  # fmt: skip


def invoke_model(ctx: ToolContext, args: InvokeArgs) -> InvokeResult:
    channel_id = args.channel_id
    if channel_id is None:
        open_ones = [
            (c.deposit - c.drawn, cid) for cid, c in ctx.wallet.channels.items() if c.asset_id == args.model_id
        ]
        if not open_ones:
            raise PaymentRefused(f"no open channel for model {args.model_id}; call open_channel first")
        channel_id = max(open_ones)[1]
    result, entry = ctx.wallet.invoke(args.model_id, args.input, channel_id)
    channel = ctx.wallet.channels[channel_id]
    return InvokeResult(model_id=args.model_id, channel_id=channel_id, output=result.output, paid=entry.amount,
                        channel_remaining=channel.deposit - channel.drawn)  # fmt: skip


def check_balance(ctx: ToolContext, args: NoArgs) -> BalanceResult:
    wallet, budget = ctx.wallet, ctx.wallet.guard.budget
    return BalanceResult(address=wallet.address, balance=ctx.client.market.token.balance_of(wallet.address),
                         spent_this_run=wallet.guard.spent, locked_in_channels=wallet.locked,
                         remaining_budget=wallet.guard.remaining, run_cap=budget.run_cap,
                         asset_cap=budget.asset_cap, call_ceiling=budget.call_ceiling)  # fmt: skip


def rate_asset(ctx: ToolContext, args: RateArgs) -> RateResult:
    """Rate with the payment that proves the most: this wallet's licenses of the asset (proof 0) or
    one of its channels for it, one that qualifies if any; the chain refuses (ActionRefused,
    InsufficientPayment) unless its licenses paid the deployment's floor in all, or the channel's claims
    reached max(the asset's price, the floor)."""
    reputation = ctx.client.market.reputation
    proofs = [0, *(cid for cid, c in ctx.wallet.channels.items() if c.asset_id == args.asset_id)]
    payments = {cid: _api(lambda cid=cid: reputation.payment_of(args.asset_id, ctx.wallet.address, cid))
                for cid in proofs}  # fmt: skip
    channel_id = max(proofs, key=lambda cid: (payments[cid].qualifies, payments[cid].paid, cid))  # (ties: a channel)
    receipt = _api(lambda: reputation.give_feedback(
        ctx.wallet.account, subject_kind=SubjectKind.ASSET, subject_id=args.asset_id, value=args.value,
        paid_asset_id=args.asset_id, channel_id=channel_id, tag1=args.tag))  # fmt: skip
    return RateResult(asset_id=args.asset_id, value=args.value, tx_hash="0x" + bytes(receipt["transactionHash"]).hex())


def publish_asset(ctx: ToolContext, args: PublishArgs) -> PublishResult:
    """Publish all or nothing (``MarketplaceClient.publish``): an asset left on chain unlisted because its
    upload or listing failed is an ``ActionRefused`` naming it (the SDK's ``PublishIncomplete`` is its cause)."""
    content = args.content.encode()
    kind = AssetKind.MODEL if args.kind == "model" else AssetKind.DATASET
    parents = [(p.asset_id, p.share_bps) for p in args.parents]
    try:
        asset_id = _api(lambda: ctx.client.publish(content, price=args.price, kind=kind, uri=args.uri, parents=parents))
    except PublishIncomplete as exc:
        raise ActionRefused(str(exc)) from exc
    return PublishResult(asset_id=asset_id, sha256=hashlib.sha256(content).hexdigest())


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool("search_assets", "Search the catalog of datasets and models by kind, text and price.", SearchArgs,
             search_assets),
        Tool("get_asset", "Everything about one asset: price, payees, lineage, sales and rating.", AssetArgs,
             get_asset),
        Tool("buy_license", "Buy a license to an asset (pays its price, within the agent's budget).", BuyArgs,
             buy_license),
        Tool("download", "Download a licensed asset's content (verified against its on-chain hash).", AssetArgs,
             download),
        Tool("open_channel", "Lock a deposit in a payment channel to call a model many times.", ChannelArgs,
             open_channel),
        Tool("invoke_model", "Call a served model, paying its per-call price from a channel.", InvokeArgs,
             invoke_model),
        Tool("check_balance", "The agent's tUSD balance, spend so far, and remaining budget.", NoArgs,
             check_balance),
        Tool("rate_asset", "Rate an asset this agent paid for (0-100): its licenses, or one channel's claims, must "
             "have paid the asset's vault at least its price and the deployment's floor (0.01 tUSD by default).",
             RateArgs, rate_asset),
        Tool("publish_asset", "Publish text content as a dataset or model at a price.", PublishArgs, publish_asset),
    ]
}  # fmt: skip


def openai_tools() -> list[dict[str, Any]]:
    """Every tool as an OpenAI-compatible ``tools=[...]`` entry."""
    return [tool.openai_spec() for tool in TOOLS.values()]


def mcp_tools() -> list[dict[str, Any]]:
    """Every tool as an MCP tool description."""
    return [tool.mcp_spec() for tool in TOOLS.values()]


def parse_arguments(
    name: str, raw_arguments: dict[str, Any] | str | None, tools: dict[str, Tool] | None = None
) -> tuple[Tool, Args]:
    """Look up tool ``name`` (in ``tools``, default all) and validate its arguments (a dict or a JSON
    string, as LLMs send them).

    No arguments may come as ``None``, ``{}``, an empty or blank string, or the JSON ``null`` (what some
    models send for a tool without parameters): all mean ``{}``. Raises ``UnknownTool`` or
    ``BadArguments``.
    """
    tools = TOOLS if tools is None else tools
    tool = tools.get(name)
    if tool is None:
        raise UnknownTool(name, sorted(tools))
    if isinstance(raw_arguments, str | bytes) and raw_arguments.strip() in ("", "null", b"", b"null"):
        raw_arguments = None
    try:
        if isinstance(raw_arguments, str | bytes):
            args = tool.args.model_validate_json(raw_arguments)
        else:
            args = tool.args.model_validate({} if raw_arguments is None else raw_arguments)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise BadArguments(name, [dict(e) for e in errors]) from exc
    return tool, args


def run_tool(
    context: ToolContext,
    name: str,
    raw_arguments: dict[str, Any] | str | None = None,
    *,
    tools: dict[str, Tool] | None = None,
) -> BaseModel:
    """Validate, then run tool ``name`` (one of ``tools``, default all); returns its result model (see
    ``Tool.result``) or raises a typed error (``UnknownTool``, ``BadArguments``, ``OverBudget``, ...)."""
    tool, args = parse_arguments(name, raw_arguments, tools)
    return tool.result(tool.function(context, args))
