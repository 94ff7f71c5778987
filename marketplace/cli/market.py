"""CLI commands for wallets and the marketplace: register, publish, buy, download, channels, earnings,
withdraw and release.

Every command that acts (sends a transaction, writes a file or a key) takes ``--json`` and then prints one
JSON object (amounts in base units as decimal strings, times in unix seconds) instead of a sentence.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from rich.table import Table
from rich.text import Text

from marketplace.chain import LOCAL_CHAIN_ID, ContractRevert, rpc_chain, to_address
from marketplace.chain.deployment import DEFAULT_MANIFEST, Deployment, read_manifest
from marketplace.chain.lineage import Release, ReleaseIncomplete
from marketplace.chain.records import AssetKind, Channel
from marketplace.chain.units import format_units, to_units
from marketplace.cli.plugin import (
    DEFAULT_RPC,
    DEFAULT_SERVER,
    JsonOption,
    RpcOption,
    ServerOption,
    WalletOption,
    console,
    password,
    print_json,
)
from marketplace.client import MarketplaceClient
from marketplace.client.pins import PIN_FILE, TRUST_ENV, DeploymentPins, connect_trusted
from marketplace.client.sdk import MarketplaceReader, PublishIncomplete
from marketplace.client.vouchers import VoucherBook
from marketplace.errors import AgentmarketError
from marketplace.protocol.wire import TokenEarnings
from marketplace.wallet_file import (
    DEFAULT_WALLET,
    create_wallet,
    encryption_keypair,
    load_wallet,
    read_keystore,
)

wallet_app = typer.Typer(help="Your account: an encrypted keystore file.", no_args_is_help=True)
agent_app = typer.Typer(help="Agent identities (ERC-8004).", no_args_is_help=True)
asset_app = typer.Typer(help="Publish, upload and browse assets.", no_args_is_help=True)
channel_app = typer.Typer(help="Payment channels for metered model calls.", no_args_is_help=True)

ActJsonOption = Annotated[bool, typer.Option("--json", help="Print what was done as one JSON object.")]
#: A manifest path the client side trusts (the same variable `serve` and `node` read theirs from).
MANIFEST_ENV = "AGENTMARKET_MANIFEST"
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-server",
        help="Trust the deployment this server follows and pin it for this chain (next to the wallet), instead of "
        "refusing a server that follows another deployment than your manifest or the one pinned.",
        envvar=TRUST_ENV,
    ),
]
#: Largest price on chain (``Marketplace`` stores prices in 96 bits) and channel deposit (128 bits), base units.
MAX_PRICE = 2**96 - 1
MAX_DEPOSIT = 2**128 - 1
#: Longest channel lifetime or extension the CLI accepts (the contract's expiry is a uint64 of seconds).
MAX_HOURS = 24 * 365 * 100


def _account(wallet: Path) -> LocalAccount:
    return load_wallet(wallet, password)  # the file is checked before the password is asked for


def _seconds(hours: float, option: str) -> int:
    """``hours`` as whole seconds, refusing what is not a positive, finite number of hours (up to MAX_HOURS)."""
    if not math.isfinite(hours) or hours <= 0 or hours > MAX_HOURS:
        raise AgentmarketError(f"{option} must be a number of hours above 0 and at most {MAX_HOURS}, not {hours}")
    return max(1, round(hours * 3600))


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _tx(receipt: Any) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


def _trusted() -> Deployment | None:
    """The deployment the user trusts: the manifest in $AGENTMARKET_MANIFEST, if set (a server following
    another deployment is then refused before anything is signed)."""
    path = os.environ.get(MANIFEST_ENV)
    return read_manifest(Path(path)) if path else None


def _client(wallet: Path, server: str, rpc: str, *, trust_server: bool = False) -> MarketplaceClient:
    """A session for the wallet's account with a server following a deployment the user trusts: the manifest
    in $AGENTMARKET_MANIFEST, else the local manifest (.agentmarket/deployment.json) if it is for this chain
    or the one pinned for this chain next to the wallet, else the server's on first use (then pinned);
    ``trust_server`` (or $AGENTMARKET_TRUST_SERVER) trusts and pins the server's (marketplace.client.pins)."""
    account = _account(wallet)
    key = bytes(encryption_keypair(account))
    # One process per call: what this wallet counted on each channel is kept next to the wallet.
    book = VoucherBook(wallet.parent / "vouchers" / f"{account.address}.json")
    named = os.environ.get(MANIFEST_ENV)
    trust = trust_server or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")
    return connect_trusted(server, account, rpc_chain(rpc), pins=DeploymentPins(wallet.parent / PIN_FILE),
                           manifest=Path(named) if named else None, local_manifest=DEFAULT_MANIFEST,
                           trust_server=trust, encryption_key=key, voucher_book=book)  # fmt: skip


def _price_now(client: MarketplaceClient, asset_id: int) -> int:
    """The asset's price on chain now (base units): the most a paying command signs when given no --max-price."""
    try:
        return client.market.marketplace.asset(asset_id).price
    except ContractRevert as exc:
        if exc.error == "UnknownAsset":
            raise AgentmarketError(f"asset {asset_id} does not exist on chain {client.chain.chain_id}") from None
        raise


def _text(*values: object) -> list[Text]:
    """Table cells shown as plain text: strings from a server or the chain (an asset's URI, say) are never read as
    rich console markup, so ``[/x]`` neither breaks the table nor restyles it."""
    return [Text(str(value)) for value in values]


def _split(values: list[str], what: str) -> list[tuple[str, int]]:
    pairs = []
    for value in values:
        left, sep, right = value.rpartition(":")
        if not sep or not right.isdigit():
            raise AgentmarketError(f"--{what} {value!r} must look like {'ADDR' if what == 'payee' else 'ID'}:BPS")
        pairs.append((left, int(right)))
    return pairs


# ---------------------------------------------------------------------- wallet


@wallet_app.command("new")
def wallet_new(wallet: WalletOption = DEFAULT_WALLET, as_json: ActJsonOption = False) -> None:
    """Create a new account in an encrypted keystore (password from $AGENTMARKET_PASSWORD or a prompt)."""
    if wallet.exists():  # before asking for a password
        raise AgentmarketError(f"{wallet} already exists; move it away or pass another --wallet")
    account = create_wallet(wallet, password(confirm=True))
    if as_json:
        public = "0x" + bytes(encryption_keypair(account).public_key).hex()
        print_json({"wallet": str(wallet), "address": account.address, "encryption_public_key": public})
        return
    console.print(f"created {wallet}\naddress {account.address}")


@wallet_app.command("show")
def wallet_show(wallet: WalletOption = DEFAULT_WALLET, rpc: RpcOption = DEFAULT_RPC, as_json: JsonOption = False,
                server: ServerOption = DEFAULT_SERVER, trust_server: TrustOption = False) -> None:  # fmt: skip
    """Address, encryption public key, and balances (ETH for gas, tUSD)."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    info = {
        "address": client.address,
        "encryption_public_key": "0x" + bytes(encryption_keypair(client.account).public_key).hex(),
        "eth_wei": str(client.chain.balance(client.address)),
        "tusd": str(client.market.token.balance_of(client.address)),
    }
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        console.print(f"{key:22} {format_units(int(value)) + ' tUSD' if key == 'tusd' else value}")


def faucet(
    address: Annotated[str | None, typer.Argument(help="Who gets the tUSD (default: your wallet).")] = None,
    amount: Annotated[str, typer.Option("--amount", help="tUSD to mint.")] = "100",
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    as_json: ActJsonOption = False,
) -> None:
    """Mint tUSD (and send 1 ETH for gas) on a local dev chain."""
    units = to_units(amount, what="--amount")
    target = to_address(address) if address else _wallet_address(wallet)
    chain = rpc_chain(rpc)
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise AgentmarketError(f"the faucet only runs on a local dev chain (chain id {LOCAL_CHAIN_ID})")
    client = MarketplaceClient.connect(server, chain.accounts[0], chain, trusted=_trusted())
    client.market.token.mint(chain.accounts[0], target, units)
    eth = 0
    if chain.balance(target) < 10**17:
        eth = 10**18
        chain.send_eth(chain.accounts[0], target, eth)
    if as_json:
        balance = client.market.token.balance_of(target)
        print_json(
            {"address": target, "minted": str(units), "eth_sent_wei": str(eth), "tusd": str(balance),
             "eth_wei": str(chain.balance(target))}
        )  # fmt: skip
        return
    console.print(f"minted {format_units(units)} tUSD to {target}" + (" and sent it 1 ETH for gas" if eth else ""))


def _wallet_address(wallet: Path) -> str:
    """The wallet's address: the keystore's (unencrypted) address field, else the key's (asks for the password)."""
    stored = read_keystore(wallet).get("address")
    if isinstance(stored, str):
        try:
            return to_address(stored if stored.startswith("0x") else "0x" + stored)
        except AgentmarketError:
            pass
    return _account(wallet).address


# ---------------------------------------------------------------------- agents


@agent_app.command("register")
def agent_register(
    uri: Annotated[str, typer.Option("--uri", help="Agent registration file URI.")] = "",
    endpoint: Annotated[str, typer.Option("--endpoint", help="Where the agent can be reached.")] = "",
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Register an agent owned by your wallet, with your wallet's X25519 key as its encryptionKey."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    metadata = {"encryptionKey": bytes(encryption_keypair(client.account).public_key)}
    if endpoint:
        metadata["endpoint"] = endpoint.encode()
    agent_id = client.market.agents.register(client.account, uri, metadata)
    if as_json:
        print_json({"agent_id": agent_id, "owner": client.address, "uri": uri, "endpoint": endpoint,
                     "encryption_public_key": "0x" + metadata["encryptionKey"].hex()})  # fmt: skip
        return
    console.print(f"registered agent {agent_id} (owner and wallet {client.address})")


# ---------------------------------------------------------------------- assets


@asset_app.command("publish")
def asset_publish(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The content to sell.")],
    price: Annotated[str, typer.Option("--price", help="Price in tUSD, e.g. 1.5")],
    kind: Annotated[AssetKind, typer.Option("--kind", help="0 = dataset, 1 = model.")] = AssetKind.DATASET,
    payee: Annotated[list[str] | None, typer.Option("--payee", help="ADDR:BPS (repeatable).")] = None,
    parent: Annotated[list[str] | None, typer.Option("--parent", help="ASSET_ID:BPS royalty (repeatable).")] = None,
    uri: Annotated[str, typer.Option("--uri", help="Metadata URI.")] = "",
    license_days: Annotated[int, typer.Option("--license-days", help="0 = perpetual.")] = 0,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Publish FILE on chain unlisted (its sha256 is the content hash), upload it, and list it once the
    server has verified it: nobody can buy it before its content is there."""
    units = to_units(price, maximum=MAX_PRICE, what="--price")
    if license_days < 0:
        raise AgentmarketError(f"--license-days must be 0 (perpetual) or more, not {license_days}")
    client = _client(wallet, server, rpc, trust_server=trust_server)
    payees = [(to_address(a), bps) for a, bps in _split(payee or [], "payee")] or None
    parents = [(int(i), bps) for i, bps in _split(parent or [], "parent")]
    try:
        asset_id = client.publish(file, price=units, kind=kind, uri=uri or file.name, payees=payees,
                                  parents=parents, license_duration=license_days * 86_400)  # fmt: skip
    except PublishIncomplete as exc:
        raise AgentmarketError(exc.explain(_upload_hint(exc.asset_id, file))) from None
    if as_json:
        asset = client.market.marketplace.asset(asset_id)
        print_json({"asset_id": asset_id, "kind": kind.name.lower(), "price": str(asset.price), "uri": asset.uri,
                     "file": str(file), "sha256": asset.content_hash.hex(), "owner": client.address,
                     "listed": asset.listed, "vault": asset.vault})  # fmt: skip
        return
    console.print(f"published asset {asset_id} ({file.name}, {price} tUSD), uploaded its content and listed it",
                  soft_wrap=True)  # fmt: skip


def _upload_hint(asset_id: int, file: Path) -> str:
    return f"run `agentmarket asset upload {asset_id} {shlex.quote(str(file))}`"


@asset_app.command("upload")
def asset_upload(
    asset_id: Annotated[int, typer.Argument(help="Your asset.")],
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Its content (the on-chain sha256).")],
    no_list: Annotated[bool, typer.Option("--no-list", help="Upload only; leave an unlisted asset unlisted.")] = False,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload FILE as the content of your asset ASSET_ID's current version (retry a publish that did not
    finish, or restore a server's copy), then list the asset once the server has verified the upload."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    try:
        stored = client.upload(asset_id, file, list_asset=not no_list)
    except PublishIncomplete as exc:
        raise AgentmarketError(exc.explain(_upload_hint(exc.asset_id, file) + " again")) from None
    if as_json:
        print_json(stored)
        return
    state = "listed: buyers can buy it" if stored.listed else "unlisted: nobody can buy it yet"
    console.print(f"uploaded asset {asset_id} version {stored.version} ({stored.size} bytes, sha256 verified "
                  f"by the server); it is {state}", soft_wrap=True)  # fmt: skip


@asset_app.command("ls")
def asset_ls(
    kind: Annotated[str | None, typer.Option("--kind", help="dataset or model")] = None,
    q: Annotated[str | None, typer.Option("--q", help="Text search")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Unlisted assets too (not buyable).")] = False,
    server: ServerOption = DEFAULT_SERVER,
    as_json: JsonOption = False,
) -> None:
    """The catalog: listed assets (with --all, unlisted ones too), and whether the server holds their content."""
    with MarketplaceReader(server, timeout=30) as reader:
        page = reader.assets(kind=kind or None, q=q or None, listed_only=False if show_all else None)
    if as_json:
        print_json(page)
        return
    table = Table(title=f"{page.total} assets")
    for column in ("id", "kind", "price (tUSD)", "owner", "parents", "uri", "state"):
        table.add_column(column)
    for a in page.items:
        state = ("listed" if a.listed else "unlisted") + ("" if a.content_uploaded else ", no content")
        table.add_row(*_text(a.asset_id, a.kind, format_units(a.price), a.owner,
                             ",".join(map(str, a.parents)), a.uri, state))  # fmt: skip
    console.print(table)


# ---------------------------------------------------------------------- buying and downloading


def buy(
    asset_id: Annotated[int, typer.Argument(help="Asset to license.")],
    max_price: Annotated[str | None, typer.Option("--max-price", help="Refuse above this many tUSD.")] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Buy a license to an asset (pays its vault on chain)."""
    limit = to_units(max_price, what="--max-price") if max_price is not None else None
    client = _client(wallet, server, rpc, trust_server=trust_server)
    receipt = client.buy(asset_id, limit)
    if as_json:
        (event,) = client.chain.events(client.market.marketplace.contract, receipt, "LicensePurchased")
        print_json(
            {"asset_id": asset_id, "buyer": client.address, "price": str(event["price"]),
             "expires_at": event["expiresAt"], "block": receipt["blockNumber"], "tx": _tx(receipt)}
        )  # fmt: skip
        return
    console.print(f"licensed asset {asset_id} in block {receipt['blockNumber']}")


def download(
    asset_id: Annotated[int, typer.Argument(help="Licensed asset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the content.")],
    agent_id: Annotated[int | None, typer.Option("--agent", help="Seal to this agent's key.")] = None,
    x402: Annotated[
        bool, typer.Option("--x402", help="No license: pay this one download per request with x402.")
    ] = False,
    max_price: Annotated[
        str | None,
        typer.Option(
            "--max-price",
            help="With --x402: refuse to pay more than this many tUSD (default: the price "
            "on chain when the command starts).",
        ),
    ] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Download licensed content (or pay for it per request with --x402), verified against the on-chain hash."""
    if x402 and agent_id is not None:
        raise AgentmarketError("--agent seals a licensed download; an --x402 download is sent over HTTP unsealed")
    if max_price is not None and not x402:
        raise AgentmarketError("--max-price limits what an --x402 download pays; a licensed download pays nothing")
    limit = to_units(max_price) if max_price is not None else None
    client = _client(wallet, server, rpc, trust_server=trust_server)
    written = {"asset_id": asset_id, "path": str(out)}
    if x402:
        if limit is None:  # what the user approved: the price as the command starts, not one raised mid-way
            limit = _price_now(client, asset_id)
        paid = client.download_x402(asset_id, out, max_amount=limit)
        payment = paid.payment
        if as_json:
            print_json({**written, "bytes": out.stat().st_size, "payment": {
                "scheme": "x402", "amount": str(payment.amount), "pay_to": payment.pay_to,
                "tx": payment.transaction, "network": payment.network}})  # fmt: skip
            return
        console.print(f"wrote {out} ({out.stat().st_size} bytes, sha256 verified against the chain); paid "
                      f"{format_units(payment.amount)} tUSD to {payment.pay_to} in {payment.transaction}",
                      soft_wrap=True)  # fmt: skip
        return
    client.download(asset_id, out, agent_id=agent_id)
    if as_json:
        print_json({**written, "bytes": out.stat().st_size, "payment": None})
        return
    console.print(f"wrote {out} ({out.stat().st_size} bytes, sha256 verified against the chain)")


@channel_app.command("open")
def channel_open(
    asset_id: Annotated[int, typer.Argument(help="Model asset to call.")],
    deposit: Annotated[str, typer.Option("--deposit", help="tUSD to lock in the channel.")],
    hours: Annotated[float, typer.Option("--hours", help="Channel lifetime.")] = 24,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Open a payment channel for metered calls (your wallet signs the vouchers; the server's settlement key,
    from GET /v1/payments, claims the calls it answered)."""
    units = to_units(deposit, maximum=MAX_DEPOSIT, what="--deposit")
    if units == 0:
        raise AgentmarketError("--deposit must be more than 0 tUSD")
    ttl = _seconds(hours, "--hours")
    client = _client(wallet, server, rpc, trust_server=trust_server)
    channel_id = client.open_channel(asset_id, units, ttl=ttl)
    channel = client.market.channels.channel(channel_id)
    if as_json:
        print_json(_channel_json(client, channel))
        return
    price = client.market.marketplace.asset(asset_id).price
    calls = f"{units // price} calls at {format_units(price)} tUSD" if price else "calls at no charge"
    console.print(f"opened channel {channel_id} for asset {asset_id} with {format_units(units)} tUSD ({calls}), "
                  f"open until {_when(channel.expiry)}", soft_wrap=True)  # fmt: skip


@channel_app.command("top-up")
def channel_top_up(
    channel_id: Annotated[int, typer.Argument(help="Your channel.")],
    amount: Annotated[str, typer.Option("--amount", help="tUSD to add to its deposit.")],
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Add tUSD to the deposit of a channel you opened (before it expires)."""
    units = to_units(amount, maximum=MAX_DEPOSIT, what="--amount")
    if units == 0:
        raise AgentmarketError("--amount must be more than 0 tUSD")
    client = _client(wallet, server, rpc, trust_server=trust_server)
    receipt = client.top_up_channel(channel_id, units)
    channel = client.market.channels.channel(channel_id)
    if as_json:
        print_json({**_channel_json(client, channel), "added": str(units), "tx": _tx(receipt)})
        return
    console.print(f"added {format_units(units)} tUSD to channel {channel_id}: deposit {format_units(channel.deposit)}"
                  f" tUSD, {format_units(channel.unclaimed)} not claimed yet", soft_wrap=True)  # fmt: skip


@channel_app.command("extend")
def channel_extend(
    channel_id: Annotated[int, typer.Argument(help="Your channel.")],
    hours: Annotated[float, typer.Option("--hours", help="Hours to add to its expiry.")],
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Keep a channel you opened open longer (before it expires)."""
    seconds = _seconds(hours, "--hours")
    client = _client(wallet, server, rpc, trust_server=trust_server)
    receipt = client.extend_channel(channel_id, seconds)
    channel = client.market.channels.channel(channel_id)
    if as_json:
        print_json({**_channel_json(client, channel), "tx": _tx(receipt)})
        return
    console.print(f"channel {channel_id} is now open until {_when(channel.expiry)}")


@channel_app.command("close")
def channel_close(
    channel_id: Annotated[int, typer.Argument(help="A channel paying for an asset you own.")],
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """End service on a channel now, as the owner of its asset: the gateway claims the calls it answered within
    15 minutes, then anyone may reclaim the rest for the payer. (A payer cannot end a channel early: it reclaims
    after the channel expires.)"""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    receipt = client.close_channel(channel_id)
    channel = client.market.channels.channel(channel_id)
    if as_json:
        print_json({**_channel_json(client, channel), "tx": _tx(receipt)})
        return
    console.print(f"closed channel {channel_id}: no more calls; the gateway may claim the answered ones until "
                  f"{_when(channel.claim_deadline)}, then `agentmarket channel reclaim {channel_id}` returns the rest "
                  "to the payer", soft_wrap=True)  # fmt: skip


@channel_app.command("reclaim")
def channel_reclaim(
    channel_id: Annotated[int, typer.Argument(help="An expired channel (anyone may reclaim it for its payer).")],
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: ActJsonOption = False,
) -> None:
    """Return what a channel's deposit still holds to its payer, once it expired and its 15-minute claim window
    is over."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    receipt = client.reclaim_channel(channel_id)
    channels = client.market.channels
    (event,) = client.chain.events(channels.contract, receipt, "ChannelSettled")
    channel = channels.channel(channel_id)
    if as_json:
        print_json({**_channel_json(client, channel), "refunded": str(event["refunded"]), "tx": _tx(receipt)})
        return
    console.print(f"reclaimed channel {channel_id}: {format_units(event['refunded'])} tUSD back to {channel.payer} "
                  f"({format_units(event['claimed'])} tUSD was claimed for calls)", soft_wrap=True)  # fmt: skip


@channel_app.command("ls")
def channel_ls(
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """The channels your wallet opened, read on chain: deposit, claimed, expiry, claim deadline, state, and what
    this wallet counted as answered on each (its voucher book)."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    rows = [_channel_json(client, channel) for channel in client.channels()]
    if as_json:
        print_json({"payer": client.address, "channels": rows})
        return
    table = Table(title=f"channels opened by {client.address}")
    for column in ("id", "asset", "deposit", "claimed", "counted here", "expires", "claims until", "state"):
        table.add_column(column)
    for row in rows:
        counted = row["counted_answered"]
        table.add_row(*_text(row["channel_id"], row["asset_id"], format_units(int(row["deposit"])),
                             format_units(int(row["claimed"])), "-" if counted is None else format_units(int(counted)),
                             _when(row["expiry"]), _when(row["claim_deadline"]), row["state"]))  # fmt: skip
    console.print(table)


def _channel_json(client: MarketplaceClient, channel: Channel) -> dict[str, Any]:
    """A channel as the CLI prints it: its on-chain state, its state in words by the chain's clock, and this
    wallet's own count (``counted_answered``: the prices of the calls it got answers for; None if it never paid
    on it)."""
    now = client.chain.timestamp()
    if channel.settled:
        state = "settled"
    elif now < channel.expiry:
        state = "open"
    elif now < channel.claim_deadline:
        state = "expired (claim window)"
    else:
        state = "reclaimable"
    count = client.channel_count(channel.channel_id)
    return {
        "channel_id": channel.channel_id,
        "asset_id": channel.asset_id,
        "payer": channel.payer,
        "token": channel.token,
        "deposit": str(channel.deposit),
        "claimed": str(channel.claimed),
        "unclaimed": str(channel.unclaimed),
        "expiry": channel.expiry,
        "claim_deadline": channel.claim_deadline,
        "state": state,
        "signer": channel.signer,
        "receiver_authorizer": channel.receiver_authorizer,
        "counted_answered": None if count is None else str(count.answered),
        "counted_signed": None if count is None else str(count.signed),
    }


def invoke(
    model_id: Annotated[int, typer.Argument(help="Model asset to call.")],
    payload: Annotated[str, typer.Option("--input", help="The model's input, as JSON.")],
    channel: Annotated[
        int | None, typer.Option("--channel", help="Pay with a voucher on this channel (default: x402 per call).")
    ] = None,
    max_price: Annotated[
        str | None,
        typer.Option(
            "--max-price",
            help="Refuse to pay more than this many tUSD for the call (default: the price "
            "on chain when the command starts).",
        ),
    ] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
) -> None:
    """Call a served model and pay for the call (a voucher on --channel, or x402); prints the JSON result."""
    try:
        model_input = json.loads(payload)
    except ValueError as exc:
        raise AgentmarketError(f"--input is not JSON: {exc}") from None
    limit = to_units(max_price) if max_price is not None else None
    client = _client(wallet, server, rpc, trust_server=trust_server)
    if limit is None:  # what the user approved: the price as the command starts, not one raised mid-call
        limit = _price_now(client, model_id)
    print_json(client.invoke(model_id, model_input, channel_id=channel, max_price=limit))


# ---------------------------------------------------------------------- earnings


def _amount(units: int, token: str, tusd: str) -> str:
    """An amount in tUSD, or in base units of another token (named by its address)."""
    return f"{format_units(units)} tUSD" if token == tusd else f"{units} base units of {token}"


def earnings(
    address: Annotated[str | None, typer.Argument(help="Account (default: your wallet).")] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """What you (or ADDRESS) can claim from each vault now, what waits up the lineage (royalties still in
    descendants' vaults: `withdraw` releases them), and what was already paid out."""
    if address:
        with MarketplaceReader(server, timeout=30) as reader:
            data = reader.earnings(to_address(address))
    else:
        data = _client(wallet, server, rpc, trust_server=trust_server).earnings()
    if as_json:
        print_json(data)
        return
    tusd, several = data.token, len({v.token for v in data.vaults}) > 1
    table = Table(title=f"earnings of {data.address}")
    columns = ("asset", "vault", *(["token"] if several else []), "share (bps)", "claimable", "waiting up the lineage")
    for column in (*columns, "released"):
        table.add_column(column)
    for v in data.vaults:
        in_tusd = v.token == tusd
        amounts = [format_units(units) if in_tusd else str(units) for units in (v.claimable, v.waiting, v.released)]
        table.add_row(*_text(v.asset_id, v.vault, *([v.token] if several else []), f"{v.share_bps:.0f}",
                             *amounts))  # fmt: skip
    console.print(table)
    for total in data.totals or [TokenEarnings(token=tusd, claimable=0, waiting=0, released=0)]:
        token = total.token
        console.print(f"claimable {_amount(total.claimable, token, tusd)} now, "
                      f"{_amount(total.waiting, token, tusd)} waiting up the lineage", soft_wrap=True)  # fmt: skip
    if data.pending_releases:
        console.print(f"`agentmarket withdraw` collects it all in {data.pending_releases} transaction(s)")
    if not data.lineage_complete:
        console.print("(the lineage is too large to walk whole, or a vault's token cannot be read: more may wait)")


def _releases_report(sent: list[Release], tusd: str) -> dict[str, object]:
    """The releases sent, for --json."""
    return {
        "releases": [
            {"asset_id": r.asset_id, "vault": r.vault, "token": r.token, "payee": r.payee,
             "payee_asset_id": r.payee_asset_id, "amount": str(r.amount), "transaction": r.transaction,
             "gas_used": r.gas_used}
            for r in sent
        ],
        "gas_used": sum(r.gas_used for r in sent),
        "token": tusd,
    }  # fmt: skip


def _incomplete(exc: ReleaseIncomplete, rerun: str) -> AgentmarketError:
    """One line for a run that sent only part of its releases."""
    if exc.stopped:
        return AgentmarketError(f"{exc}; run `{rerun}` again to finish")
    return AgentmarketError(f"{exc}; every other release was sent (run `{rerun}` again to retry the failed one)")


def withdraw(
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Collect everything waiting for you: royalties up the lineage first (descendants' vaults release to
    your assets' vaults, children first, in every token), then every vault that pays you releases to your
    wallet. One transaction per release that moves money; re-running after a failure finishes the job."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    tusd = client.market.token.address
    try:
        sent = client.collect()
    except ReleaseIncomplete as exc:
        raise _incomplete(exc, "agentmarket withdraw") from None
    if as_json:
        print_json(_releases_report(sent, tusd))
        return
    mine = [r for r in sent if r.payee == client.address]
    received: dict[str, int] = {}
    for release in mine:
        received[release.token] = received.get(release.token, 0) + release.amount
    upstream = len(sent) - len(mine)
    amounts = " + ".join(_amount(v, t, tusd) for t, v in sorted(received.items(), key=lambda i: i[0] != tusd))
    console.print(f"withdrew {amounts or _amount(0, tusd, tusd)} from {len({r.asset_id for r in mine})} vault(s) in "
                  f"{len(sent)} transaction(s) ({upstream} release(s) up the lineage; "
                  f"{sum(r.gas_used for r in sent):,} gas)", soft_wrap=True)  # fmt: skip


def release(
    asset_id: Annotated[int, typer.Argument(help="The asset whose royalties to push up its lineage.")],
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    trust_server: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Push ASSET_ID's royalties up its lineage: its vault releases to its parents' vaults, then those to
    theirs, children first, in every token that reached them. Anyone may; your wallet pays the gas."""
    client = _client(wallet, server, rpc, trust_server=trust_server)
    tusd = client.market.token.address
    try:
        sent = client.release(asset_id)
    except ReleaseIncomplete as exc:
        raise _incomplete(exc, f"agentmarket release {asset_id}") from None
    if as_json:
        print_json(_releases_report(sent, tusd))
        return
    if not sent:
        console.print(f"nothing to release up asset {asset_id}'s lineage")
        return
    for r in sent:
        console.print(f"asset {r.asset_id}'s vault -> asset {r.payee_asset_id}'s vault: "
                      f"{_amount(r.amount, r.token, tusd)} ({r.gas_used:,} gas)", soft_wrap=True)  # fmt: skip
    console.print(f"released royalties up asset {asset_id}'s lineage in {len(sent)} transaction(s)")


# ---------------------------------------------------------------------- example files

#: The example files `agentmarket examples` writes (package data in marketplace/examples; examples/ in the repo).
EXAMPLE_FILES = ("iris.csv", "iris_model.py", "model-card.json")


def examples(
    directory: Annotated[Path, typer.Argument(help="Where to write them.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files of the same names.")] = False,
    as_json: ActJsonOption = False,
) -> None:
    """Write the README's example files: iris.csv (a dataset to sell), iris_model.py (a model handler to serve:
    `serve --model 2=iris_model:predict` in that directory) and model-card.json (the card of a k-NN digits
    model, served by `--model 3=agents.learning:digits_classifier`)."""
    source = resources.files("marketplace") / "examples"
    targets = [directory / name for name in EXAMPLE_FILES]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not force:
        raise AgentmarketError(f"{', '.join(existing)} already there; pass --force to overwrite, or another DIRECTORY")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, target in zip(EXAMPLE_FILES, targets, strict=True):
            target.write_bytes(source.joinpath(name).read_bytes())
    except OSError as exc:
        raise AgentmarketError(f"cannot write the examples into {directory}: {exc.strerror or exc}") from None
    if as_json:
        print_json({"directory": str(directory), "files": [str(target) for target in targets]})
        return
    console.print(f"wrote {', '.join(str(target) for target in targets)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the top-level CLI."""
    app.add_typer(wallet_app, name="wallet")
    app.add_typer(agent_app, name="agent")
    app.add_typer(asset_app, name="asset")
    app.add_typer(channel_app, name="channel")
    app.command("faucet")(faucet)
    app.command("examples")(examples)
    for command in (buy, download, invoke, earnings, withdraw, release):
        app.command()(command)
