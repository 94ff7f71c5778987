"""Commands of the ``agentmarket`` CLI."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.table import Table

from marketplace.chain import AnvilNode, Chain, ChainError, connect, to_address
from marketplace.chain.backends import LOCAL_CHAIN_ID, rpc_chain
from marketplace.chain.deployment import DEFAULT_MANIFEST, deploy_all, load_deployment
from marketplace.chain.units import format_units
from marketplace.cli import market as market_commands
from marketplace.cli.plugin import DEFAULT_RPC, JsonOption, RpcOption, console, interrupt_on_signals
from marketplace.errors import AgentmarketError

app = typer.Typer(
    name="agentmarket",
    help="A marketplace where agents pay for data and model access, and payments flow up the data lineage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
contracts_app = typer.Typer(
    help="Build the Solidity contracts (needs Node: npm ci --prefix contracts).", no_args_is_help=True
)
app.add_typer(contracts_app, name="contracts")


def _print_version(wanted: bool) -> None:
    if wanted:
        try:
            installed = version("agentmarket")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from marketplace import __version__ as installed
        console.print(f"agentmarket {installed}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options that come before the command."""


DEFAULT_NODE_PORT = 8545
DEFAULT_SERVER_PORT = 8000
DEPLOYER_KEY_ENV = "AGENTMARKET_DEPLOYER_KEY"
#: Host names that mean this machine's loopback interface.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

ManifestOption = Annotated[
    Path, typer.Option("--manifest", help="Deployment manifest path.", envvar="AGENTMARKET_MANIFEST")
]


def _deployer(chain: Chain) -> LocalAccount:
    """The deploying key: $AGENTMARKET_DEPLOYER_KEY, or the first dev account on a local chain."""
    key = os.environ.get(DEPLOYER_KEY_ENV)
    if key:
        try:
            return Account.from_key(key)
        except (ValueError, TypeError):
            raise AgentmarketError(f"{DEPLOYER_KEY_ENV} is not a valid private key (want 0x + 64 hex digits)") from None
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise AgentmarketError(
            f"chain id {chain.chain_id} is not a local dev chain; set {DEPLOYER_KEY_ENV} to the deployer's key"
        )
    return chain.accounts[0]


@contracts_app.command("build")
def contracts_build(
    check: Annotated[bool, typer.Option("--check", help="Only check that committed artifacts are fresh.")] = False,
) -> None:
    """Compile contracts/src with solc-js and write the artifacts inside the marketplace package."""
    from marketplace.chain.build import compile_contracts, stale_artifacts, write_artifacts

    result = compile_contracts()
    if check:
        stale = stale_artifacts(result)
        if stale:
            raise AgentmarketError(f"stale artifacts: {', '.join(stale)}; run agentmarket contracts build")
        console.print(f"artifacts are fresh ({len(result.artifacts)} contracts, solc {result.compiler_version})")
        return
    for path in write_artifacts(result):
        console.print(f"wrote {path}")


@app.command()
def deploy(rpc: RpcOption = DEFAULT_RPC, manifest: ManifestOption = DEFAULT_MANIFEST) -> None:
    """Deploy the contract set to a running chain and write the deployment manifest."""
    with rpc_chain(rpc) as chain:
        deployment = deploy_all(chain, _deployer(chain))
        deployment.save(manifest)
        _print_deployment(chain, deployment.to_json(), manifest)


def _print_deployment(chain: Chain, manifest_data: dict, manifest: Path) -> None:
    table = Table(title=f"deployed on chain {chain.chain_id}")
    for column in ("contract", "address", "block", "gas"):
        table.add_column(column)
    for name, deployed in manifest_data["contracts"].items():
        table.add_row(name, deployed["address"], str(deployed["deploy_block"]), f"{deployed['gas_used']:,}")
    console.print(table)
    console.print(f"manifest: {manifest}")


def _node_port() -> int:
    """``node``'s default port: that of ``AGENTMARKET_RPC`` when it names this machine (so every command
    that reads it finds the node), else 8545."""
    rpc = os.environ.get("AGENTMARKET_RPC", "")
    with contextlib.suppress(ValueError):
        parts = urlsplit(rpc)
        if parts.scheme == "http" and parts.hostname in _LOOPBACK and parts.port:
            return parts.port
    return DEFAULT_NODE_PORT


@app.command()
def node(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Port for anvil on 127.0.0.1 (default: the port of AGENTMARKET_RPC when it names this machine, "
            "else 8545).",
            show_default=False,
        ),
    ] = None,
    manifest: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Start a local anvil chain, deploy the contracts, and keep it up until Ctrl-C.

    Every start is a new chain (same chain id and addresses, a new genesis): restart `serve` after it.
    """
    interrupt_on_signals()
    # AnvilNode refuses a busy port, and makes sure what answers is its own anvil: nothing is deployed,
    # and no manifest written, anywhere else.
    with AnvilNode(port=_node_port() if port is None else port) as anvil, connect(anvil.url) as chain:
        deployment = deploy_all(chain, _deployer(chain))
        deployment.save(manifest)
        _print_deployment(chain, deployment.to_json(), manifest)
        console.print(f"RPC URL: {anvil.url}")
        console.print(f"anvil pid {anvil.pid}; press Ctrl-C to stop", style="dim")
        try:
            while (code := anvil.returncode) is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping anvil")
            return
    raise ChainError(
        f"anvil (pid {anvil.pid}) exited on its own (code {code}): the chain at {anvil.url} is gone; run "
        "`agentmarket node` again for a new one (and restart `serve`)"
    )


@app.command()
def balances(
    addresses: Annotated[list[str] | None, typer.Argument(help="Accounts to show (default: the dev accounts).")] = None,
    rpc: RpcOption = DEFAULT_RPC,
    manifest: ManifestOption = DEFAULT_MANIFEST,
    as_json: JsonOption = False,
) -> None:
    """Show the token and tUSD balances of accounts on a deployed chain."""
    wanted = [to_address(a) for a in addresses or []]
    with rpc_chain(rpc) as chain:
        token = load_deployment(manifest, chain).token(chain)
        accounts = wanted or [a.address for a in chain.accounts[:4]]
        rows = {a: token.balance_of(a) for a in accounts}
        if as_json:
            payload = {
                "token": {
                    "address": token.address,
                    "name": token.name(),
                    "symbol": token.symbol(),
                    "decimals": token.decimals(),
                },
                "balances": {a: str(v) for a, v in rows.items()},
            }
            console.print_json(json.dumps(payload))
            return
        table = Table(title=f"{token.name()} ({token.symbol()}) at {token.address}")
        table.add_column("account")
        table.add_column(token.symbol(), justify="right")
        for account, units in rows.items():
            table.add_row(account, format_units(units))
        console.print(table)


def _port_number(value: str, option: str) -> int:
    if not value.strip().isdigit() or int(value) > 65535:
        raise AgentmarketError(f"{option} must be a port number from 0 to 65535, not {value!r}")
    return int(value)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or a one-line :class:`AgentmarketError` saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise AgentmarketError(
            f"cannot listen on {host!r}: not an address of this machine ({exc}); use e.g. --host 127.0.0.1 "
            "(AGENTMARKET_HOST)"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AgentmarketError(
                f"port {port} is in use on {host}: stop what listens there (another agentmarket serve?), or choose "
                "another --port (AGENTMARKET_PORT)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise AgentmarketError(f"cannot listen on {host}: not an address of this machine (--host)") from None
        raise AgentmarketError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@app.command()
def serve(
    rpc: RpcOption = DEFAULT_RPC,
    manifest: ManifestOption = DEFAULT_MANIFEST,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).", envvar="AGENTMARKET_HOST")
    ] = "127.0.0.1",
    port: Annotated[
        str,
        typer.Option("--port", help="Port to listen on (0: any free one).", envvar="AGENTMARKET_PORT", metavar="PORT"),
    ] = str(DEFAULT_SERVER_PORT),
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where the server keeps its read model, voucher ledger and content (other chains' in archive/).",
            envvar="AGENTMARKET_DATA_DIR",
        ),
    ] = Path(".agentmarket") / "server",
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Serve a model asset: ID=package.module:function or ID=openai+URL#model."),
    ] = None,
    voucher_sync: Annotated[
        str,
        typer.Option(
            "--voucher-sync",
            help="Voucher ledger commits: full (fsync each; survives a power loss) or normal (faster; survives a "
            "killed process, a power loss may undo the last commits).",
            envvar="AGENTMARKET_VOUCHER_SYNC",
        ),
    ] = "full",
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="After a node restart (a new chain): archive the old chain's state even if its voucher ledger holds "
            "answered calls never claimed (they stay unclaimed). Without it, the old state is archived only when "
            "nothing is left unclaimed.",
        ),
    ] = False,
) -> None:
    """Serve the marketplace API: catalog, login, content, paid model calls, settlement.

    At start, another chain's state in the data directory (after a node restart) moves to <data-dir>/archive/.
    """
    import uvicorn

    from marketplace.api import Settings, create_app
    from marketplace.api.app import build_services
    from marketplace.api.server import server_config
    from marketplace.inference import parse_handler
    from marketplace.payments.voucher_ledger import SYNCHRONOUS

    handlers = {}
    for spec in model or []:
        asset_id, sep, handler = spec.partition("=")
        if not sep or not asset_id.isdigit():
            raise AgentmarketError(f"--model {spec!r} must look like ID=package.module:function")
        handlers[int(asset_id)] = parse_handler(handler)
    if voucher_sync not in SYNCHRONOUS:
        raise AgentmarketError(f"--voucher-sync must be one of {', '.join(SYNCHRONOUS)}, not {voucher_sync!r}")
    # Listen first: a busy port is one line before anything else, and nobody can take the port meanwhile.
    listener = _listen(host, _port_number(port, "--port (AGENTMARKET_PORT)"))
    with contextlib.closing(listener):
        bound = listener.getsockname()[1]
        settings = Settings.load(rpc_url=rpc, manifest=manifest, host=host, port=bound, data_dir=data_dir,
                                 voucher_sync=voucher_sync)  # fmt: skip
        archived: list[str] = []

        def announce(line: str) -> None:
            archived.append(line)
            console.print(line, soft_wrap=True)

        services = build_services(settings, reset=reset, announce=announce)  # fail fast, in one line
        services.ledger.close()
        services.engine.dispose()
        if reset and not archived:
            console.print(f"--reset: nothing to archive ({data_dir} holds no other chain's state)")
        shown = f"[{host}]" if ":" in host else host
        console.print(f"serving http://{shown}:{bound} (OpenAPI at /openapi.json)")
        server = uvicorn.Server(server_config(create_app(settings, model_handlers=handlers)))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down on Ctrl-C, then re-raised it
            server.run(sockets=[listener])
        if not server.started:
            raise AgentmarketError(f"the server did not start on {host}:{bound}; see the messages above")


market_commands.register(app)
