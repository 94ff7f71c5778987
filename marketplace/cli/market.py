"""CLI commands for wallets and the marketplace: register, publish, buy, download, channels, earnings,
withdraw and release."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from marketplace.chain import LOCAL_CHAIN_ID, rpc_chain, to_address
from marketplace.chain.deployment import Deployment, read_manifest
from marketplace.chain.lineage import Release, ReleaseIncomplete
from marketplace.chain.market import AssetKind
from marketplace.chain.token import format_units, to_units
from marketplace.client import MarketplaceClient
from marketplace.client.sdk import MarketplaceReader, PublishIncomplete
from marketplace.client.vouchers import VoucherBook
from marketplace.errors import AgentmarketError
from marketplace.wallet_file import DEFAULT_WALLET, PASSWORD_ENV, create_wallet, encryption_keypair, load_wallet

console = Console(highlight=False)

wallet_app = typer.Typer(help="Your account: an encrypted keystore file.", no_args_is_help=True)
agent_app = typer.Typer(help="Agent identities (ERC-8004).", no_args_is_help=True)
asset_app = typer.Typer(help="Publish, upload and browse assets.", no_args_is_help=True)
channel_app = typer.Typer(help="Payment channels for metered model calls.", no_args_is_help=True)

WalletOption = Annotated[Path, typer.Option("--wallet", help="Keystore file.", envvar="AGENTMARKET_WALLET")]
ServerOption = Annotated[str, typer.Option("--server", help="Marketplace API URL.", envvar="AGENTMARKET_SERVER")]
RpcOption = Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain.", envvar="AGENTMARKET_RPC")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"
#: A manifest path the client side trusts (the same variable `serve` and `node` read theirs from).
MANIFEST_ENV = "AGENTMARKET_MANIFEST"
DEFAULT_RPC = "http://127.0.0.1:8545"


def _password(confirm: bool = False) -> str:
    return os.environ.get(PASSWORD_ENV) or typer.prompt("wallet password", hide_input=True,
                                                         confirmation_prompt=confirm)  # fmt: skip


def _account(wallet: Path) -> LocalAccount:
    return load_wallet(wallet, _password())


def _trusted() -> Deployment | None:
    """The deployment the user trusts: the manifest in $AGENTMARKET_MANIFEST, if set (a server following
    another deployment is then refused before anything is signed)."""
    path = os.environ.get(MANIFEST_ENV)
    return read_manifest(Path(path)) if path else None


def _client(wallet: Path, server: str, rpc: str) -> MarketplaceClient:
    account = _account(wallet)
    key = bytes(encryption_keypair(account))
    # One process per call: what this wallet counted on each channel is kept next to the wallet.
    book = VoucherBook(wallet.parent / "vouchers" / f"{account.address}.json")
    return MarketplaceClient.connect(server, account, rpc_chain(rpc), encryption_key=key, trusted=_trusted(),
                                     voucher_book=book)  # fmt: skip


def _print_json(data: object) -> None:
    console.print_json(json.dumps(data))


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
def wallet_new(wallet: WalletOption = DEFAULT_WALLET) -> None:
    """Create a new account in an encrypted keystore (password from $AGENTMARKET_PASSWORD or a prompt)."""
    account = create_wallet(wallet, _password(confirm=True))
    console.print(f"created {wallet}\naddress {account.address}")


@wallet_app.command("show")
def wallet_show(wallet: WalletOption = DEFAULT_WALLET, rpc: RpcOption = DEFAULT_RPC, as_json: JsonOption = False,
                server: ServerOption = DEFAULT_SERVER) -> None:  # fmt: skip
    """Address, encryption public key, and balances (ETH for gas, tUSD)."""
    client = _client(wallet, server, rpc)
    info = {
        "address": client.address,
        "encryption_public_key": "0x" + bytes(encryption_keypair(client.account).public_key).hex(),
        "eth_wei": str(client.chain.balance(client.address)),
        "tusd": str(client.market.token.balance_of(client.address)),
    }
    if as_json:
        _print_json(info)
        return
    for key, value in info.items():
        console.print(f"{key:22} {format_units(int(value)) + ' tUSD' if key == 'tusd' else value}")


def faucet(
    address: Annotated[str | None, typer.Argument(help="Who gets the tUSD (default: your wallet).")] = None,
    amount: Annotated[str, typer.Option("--amount", help="tUSD to mint.")] = "100",
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Mint tUSD (and send 1 ETH for gas) on a local dev chain."""
    units = to_units(amount)
    chain = rpc_chain(rpc)
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise AgentmarketError(f"the faucet only runs on a local dev chain (chain id {LOCAL_CHAIN_ID})")
    target = to_address(address) if address else _account(wallet).address
    client = MarketplaceClient.connect(server, chain.accounts[0], chain, trusted=_trusted())
    client.market.token.mint(chain.accounts[0], target, units)
    if chain.balance(target) < 10**17:
        chain.send_eth(chain.accounts[0], target, 10**18)
    console.print(f"minted {format_units(units)} tUSD to {target}")


# ---------------------------------------------------------------------- agents


@agent_app.command("register")
def agent_register(
    uri: Annotated[str, typer.Option("--uri", help="Agent registration file URI.")] = "",
    endpoint: Annotated[str, typer.Option("--endpoint", help="Where the agent can be reached.")] = "",
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Register an agent owned by your wallet, with your wallet's X25519 key as its encryptionKey."""
    client = _client(wallet, server, rpc)
    metadata = {"encryptionKey": bytes(encryption_keypair(client.account).public_key)}
    if endpoint:
        metadata["endpoint"] = endpoint.encode()
    agent_id = client.market.agents.register(client.account, uri, metadata)
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
) -> None:
    """Publish FILE on chain unlisted (its sha256 is the content hash), upload it, and list it once the
    server has verified it: nobody can buy it before its content is there."""
    client = _client(wallet, server, rpc)
    payees = [(to_address(a), bps) for a, bps in _split(payee or [], "payee")] or None
    parents = [(int(i), bps) for i, bps in _split(parent or [], "parent")]
    try:
        asset_id = client.publish(file, price=to_units(price), kind=kind, uri=uri or file.name, payees=payees,
                                  parents=parents, license_duration=license_days * 86_400)  # fmt: skip
    except PublishIncomplete as exc:
        raise AgentmarketError(exc.explain(_upload_hint(exc.asset_id, file))) from None
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
    as_json: JsonOption = False,
) -> None:
    """Upload FILE as the content of your asset ASSET_ID's current version (retry a publish that did not
    finish, or restore a server's copy), then list the asset once the server has verified the upload."""
    client = _client(wallet, server, rpc)
    try:
        stored = client.upload(asset_id, file, list_asset=not no_list)
    except PublishIncomplete as exc:
        raise AgentmarketError(exc.explain(_upload_hint(exc.asset_id, file) + " again")) from None
    if as_json:
        _print_json(stored)
        return
    state = "listed: buyers can buy it" if stored["listed"] else "unlisted: nobody can buy it yet"
    console.print(f"uploaded asset {asset_id} version {stored['version']} ({stored['size']} bytes, sha256 verified "
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
        _print_json(page)
        return
    table = Table(title=f"{page['total']} assets")
    for column in ("id", "kind", "price (tUSD)", "owner", "parents", "uri", "state"):
        table.add_column(column)
    for a in page["items"]:
        state = ("listed" if a["listed"] else "unlisted") + ("" if a.get("content_uploaded") else ", no content")
        table.add_row(str(a["asset_id"]), a["kind"], format_units(int(a["price"])), a["owner"],
                      ",".join(map(str, a["parents"])), a["uri"], state)  # fmt: skip
    console.print(table)


# ---------------------------------------------------------------------- buying and downloading


def buy(
    asset_id: Annotated[int, typer.Argument(help="Asset to license.")],
    max_price: Annotated[str | None, typer.Option("--max-price", help="Refuse above this many tUSD.")] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Buy a license to an asset (pays its vault on chain)."""
    client = _client(wallet, server, rpc)
    receipt = client.buy(asset_id, to_units(max_price) if max_price else None)
    console.print(f"licensed asset {asset_id} in block {receipt['blockNumber']}")


def download(
    asset_id: Annotated[int, typer.Argument(help="Licensed asset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the content.")],
    agent_id: Annotated[int | None, typer.Option("--agent", help="Seal to this agent's key.")] = None,
    x402: Annotated[
        bool, typer.Option("--x402", help="No license: pay this one download per request with x402.")
    ] = False,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Download licensed content (or pay for it per request with --x402), verified against the on-chain hash."""
    if x402 and agent_id is not None:
        raise AgentmarketError("--agent seals a licensed download; an --x402 download is sent over HTTP unsealed")
    client = _client(wallet, server, rpc)
    if x402:
        paid = client.download_x402(asset_id, out)
        payment = paid.payment
        console.print(f"wrote {out} ({out.stat().st_size} bytes, sha256 verified against the chain); paid "
                      f"{format_units(payment.amount)} tUSD to {payment.pay_to} in {payment.transaction}",
                      soft_wrap=True)  # fmt: skip
        return
    client.download(asset_id, out, agent_id=agent_id)
    console.print(f"wrote {out} ({out.stat().st_size} bytes, sha256 verified against the chain)")


@channel_app.command("open")
def channel_open(
    asset_id: Annotated[int, typer.Argument(help="Model asset to call.")],
    deposit: Annotated[str, typer.Option("--deposit", help="tUSD to lock in the channel.")],
    hours: Annotated[float, typer.Option("--hours", help="Channel lifetime.")] = 24,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Open a payment channel for metered calls (your wallet signs the vouchers; the server's settlement key,
    from GET /v1/payments, claims the calls it answered)."""
    client = _client(wallet, server, rpc)
    channel_id = client.open_channel(asset_id, to_units(deposit), ttl=int(hours * 3600))
    console.print(f"opened channel {channel_id} for asset {asset_id} with {deposit} tUSD")


def invoke(
    model_id: Annotated[int, typer.Argument(help="Model asset to call.")],
    payload: Annotated[str, typer.Option("--input", help="The model's input, as JSON.")],
    channel: Annotated[
        int | None, typer.Option("--channel", help="Pay with a voucher on this channel (default: x402 per call).")
    ] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Call a served model and pay for the call (a voucher on --channel, or x402); prints the JSON result."""
    try:
        model_input = json.loads(payload)
    except ValueError as exc:
        raise AgentmarketError(f"--input is not JSON: {exc}") from None
    _print_json(_client(wallet, server, rpc).invoke(model_id, model_input, channel_id=channel))


# ---------------------------------------------------------------------- earnings


def _amount(units: int | str, token: str, tusd: str) -> str:
    """An amount in tUSD, or in base units of another token (named by its address)."""
    return f"{format_units(int(units))} tUSD" if token == tusd else f"{int(units)} base units of {token}"


def earnings(
    address: Annotated[str | None, typer.Argument(help="Account (default: your wallet).")] = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    as_json: JsonOption = False,
) -> None:
    """What you (or ADDRESS) can claim from each vault now, what waits up the lineage (royalties still in
    descendants' vaults: `withdraw` releases them), and what was already paid out."""
    if address:
        with MarketplaceReader(server, timeout=30) as reader:
            data = reader.earnings(to_address(address))
    else:
        data = _client(wallet, server, rpc).earnings()
    if as_json:
        _print_json(data)
        return
    tusd, several = data["token"], len({v["token"] for v in data["vaults"]}) > 1
    table = Table(title=f"earnings of {data['address']}")
    columns = ("asset", "vault", *(["token"] if several else []), "share (bps)", "claimable", "waiting up the lineage")
    for column in (*columns, "released"):
        table.add_column(column)
    for v in data["vaults"]:
        in_tusd = v["token"] == tusd
        amounts = [format_units(int(v[k])) if in_tusd else v[k] for k in ("claimable", "waiting", "released")]
        table.add_row(str(v["asset_id"]), v["vault"], *([v["token"]] if several else []), f"{v['share_bps']:.0f}",
                      *amounts)  # fmt: skip
    console.print(table)
    for total in data["totals"] or [{"token": tusd, "claimable": "0", "waiting": "0"}]:
        token = total["token"]
        console.print(f"claimable {_amount(total['claimable'], token, tusd)} now, "
                      f"{_amount(total['waiting'], token, tusd)} waiting up the lineage", soft_wrap=True)  # fmt: skip
    if data["pending_releases"]:
        console.print(f"`agentmarket withdraw` collects it all in {data['pending_releases']} transaction(s)")
    if not data["lineage_complete"]:
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
    as_json: JsonOption = False,
) -> None:
    """Collect everything waiting for you: royalties up the lineage first (descendants' vaults release to
    your assets' vaults, children first, in every token), then every vault that pays you releases to your
    wallet. One transaction per release that moves money; re-running after a failure finishes the job."""
    client = _client(wallet, server, rpc)
    tusd = client.market.token.address
    try:
        sent = client.collect()
    except ReleaseIncomplete as exc:
        raise _incomplete(exc, "agentmarket withdraw") from None
    if as_json:
        _print_json(_releases_report(sent, tusd))
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
    as_json: JsonOption = False,
) -> None:
    """Push ASSET_ID's royalties up its lineage: its vault releases to its parents' vaults, then those to
    theirs, children first, in every token that reached them. Anyone may; your wallet pays the gas."""
    client = _client(wallet, server, rpc)
    tusd = client.market.token.address
    try:
        sent = client.release(asset_id)
    except ReleaseIncomplete as exc:
        raise _incomplete(exc, f"agentmarket release {asset_id}") from None
    if as_json:
        _print_json(_releases_report(sent, tusd))
        return
    if not sent:
        console.print(f"nothing to release up asset {asset_id}'s lineage")
        return
    for r in sent:
        console.print(f"asset {r.asset_id}'s vault -> asset {r.payee_asset_id}'s vault: "
                      f"{_amount(r.amount, r.token, tusd)} ({r.gas_used:,} gas)", soft_wrap=True)  # fmt: skip
    console.print(f"released royalties up asset {asset_id}'s lineage in {len(sent)} transaction(s)")


def register(app: typer.Typer) -> None:
    """Add these commands to the top-level CLI."""
    app.add_typer(wallet_app, name="wallet")
    app.add_typer(agent_app, name="agent")
    app.add_typer(asset_app, name="asset")
    app.add_typer(channel_app, name="channel")
    app.command("faucet")(faucet)
    for command in (buy, download, invoke, earnings, withdraw, release):
        app.command()(command)
