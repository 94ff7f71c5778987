"""The three backends behind :class:`~marketplace.chain.chain.Chain`: embedded py-evm, anvil, any RPC URL."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3

from marketplace.chain.chain import BackendHooks, Chain
from marketplace.chain.errors import ChainError

#: Chain id of every local chain agentmarket starts (anvil's default too).
LOCAL_CHAIN_ID = 31337
#: The well-known development mnemonic (anvil's and hardhat's): its accounts are public test keys.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PATH = "m/44'/60'/0'/0"
DEV_ACCOUNT_COUNT = 10
DEV_BALANCE_ETH = 10_000

REPO_ROOT = Path(__file__).resolve().parents[2]


def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> list[LocalAccount]:
    """The funded development accounts of every local chain (public keys: never hold real value)."""
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PATH}/{i}") for i in range(count)]


def connect(target: str = "embedded") -> Chain:
    """Connect to ``target``: ``embedded`` (in-process py-evm), ``anvil`` (start a node), or an RPC URL."""
    if target == "embedded":
        return embedded_chain()
    if target == "anvil":
        return anvil_chain()
    if target.startswith(("http://", "https://")):
        return rpc_chain(target)
    raise ChainError(f"unknown chain {target!r}: use 'embedded', 'anvil' or an http(s):// RPC URL")


# ---------------------------------------------------------------------- embedded


class _LockedTesterProvider(EthereumTesterProvider):
    """py-evm is not thread-safe: serve one JSON-RPC request at a time (servers use threads)."""

    _lock = threading.RLock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self._lock:
            return super().make_request(method, params)


def embedded_chain() -> Chain:
    """A fresh py-evm chain in this process, chain id 31337, with the funded dev accounts."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3.providers.eth_tester.defaults import API_ENDPOINTS

    backend = PyEVMBackend.from_mnemonic(
        DEV_MNEMONIC,
        num_accounts=DEV_ACCOUNT_COUNT,
        hd_path=DEV_HD_PATH,
        genesis_state_overrides={"balance": DEV_BALANCE_ETH * 10**18},
    )
    # eth-tester hard-codes its chain id in two places: the py-evm chain class and the provider's
    # eth_chainId endpoint. The chain class is built per backend, so changing it is local.
    type(backend.chain).chain_id = LOCAL_CHAIN_ID
    endpoints = {namespace: dict(methods) for namespace, methods in API_ENDPOINTS.items()}
    endpoints["eth"]["chainId"] = lambda *_args, **_kwargs: LOCAL_CHAIN_ID
    for method in ("call", "estimateGas", "sendRawTransaction", "sendTransaction"):
        endpoints["eth"][method] = _keep_revert_bytes(endpoints["eth"][method])
    tester = EthereumTester(backend)
    w3 = Web3(_LockedTesterProvider(tester, api_endpoints=endpoints))

    def time_travel(_w3: Web3, to_timestamp: int) -> None:
        # eth-tester's own time_travel mines at to_timestamp - 1; set the pending header exactly.
        backend.chain.header = backend.chain.header.copy(timestamp=to_timestamp)
        tester.mine_blocks()

    hooks = BackendHooks(kind="embedded", time_travel=time_travel, receipt_poll_latency=0.0)
    return Chain(w3, hooks, dev_accounts())


def _keep_revert_bytes(delegator: Callable[..., Any]) -> Callable[..., Any]:
    """Stop web3's eth-tester provider from decoding any revert data as a string.

    The provider reads raw revert bytes as ``abi.decode(["string"], data[4:])`` whatever their
    selector, so a custom error with one string argument loses its name. Handing it the bytes'
    repr instead keeps every byte for :func:`revert_from_exception` to decode.
    """
    from eth_tester.exceptions import TransactionFailed

    def delegate(tester: Any, params: Any) -> Any:
        try:
            return delegator(tester, params)
        except TransactionFailed as exc:
            raw = exc.args[0] if exc.args else b""
            if isinstance(raw, Exception):
                raw = raw.args[0] if raw.args else b""
            if isinstance(raw, bytes | bytearray):
                raise TransactionFailed(repr(bytes(raw))) from None
            raise

    return delegate


# ---------------------------------------------------------------------- JSON-RPC (anvil or any node)


def _http_web3(url: str) -> Web3:
    # web3 asks for the chain id before many calls; it never changes for a URL, so cache just that.
    provider = HTTPProvider(
        url, request_kwargs={"timeout": 30}, cache_allowed_requests=True, cacheable_requests={"eth_chainId"}
    )
    return Web3(provider)


def _check_reachable(w3: Web3, url: str) -> None:
    try:
        w3.eth.chain_id  # noqa: B018 - the request is the check
    except (requests.exceptions.RequestException, OSError) as exc:
        raise ChainError(
            f"cannot reach an Ethereum JSON-RPC node at {url} ({type(exc).__name__}); "
            "check the URL and that the node is running (agentmarket node starts one)"
        ) from None


def _anvil_time_travel(w3: Web3, to_timestamp: int) -> None:
    w3.provider.make_request("evm_setNextBlockTimestamp", [to_timestamp])
    w3.provider.make_request("evm_mine", [])


def rpc_chain(url: str) -> Chain:
    """A chain reached over JSON-RPC at ``url``; dev accounts are those of the local mnemonic."""
    w3 = _http_web3(url)
    _check_reachable(w3, url)
    hooks = BackendHooks(kind="rpc", time_travel=_anvil_time_travel, rpc_url=url)
    return Chain(w3, hooks, dev_accounts())


def anvil_chain(**node_options: object) -> Chain:
    """Start an anvil node and connect to it; closing the chain stops the node."""
    node = AnvilNode(**node_options)  # type: ignore[arg-type]
    node.start()
    try:
        w3 = _http_web3(node.url)
        hooks = BackendHooks(kind="anvil", time_travel=_anvil_time_travel, close=node.stop, rpc_url=node.url)
        return Chain(w3, hooks, dev_accounts())
    except BaseException:
        node.stop()
        raise


#: How to install anvil, for error messages (the repository's `make setup` runs the npm command).
INSTALL_ANVIL = "run `make setup` (it runs `npm ci --prefix contracts`) in a clone of agentmarket"


def find_anvil() -> Path:
    """Path of the anvil binary: $AGENTMARKET_ANVIL, the npm package in contracts/, or PATH.

    Raises :class:`ChainError` (one line naming the install command) when there is none.
    """
    from_env = os.environ.get("AGENTMARKET_ANVIL")
    if from_env:
        return Path(from_env)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
    system = platform.system().lower()
    npm_binary = REPO_ROOT / "contracts" / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if npm_binary.is_file():
        return npm_binary
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise ChainError(
        f"anvil is not installed: {INSTALL_ANVIL}, or put foundry's anvil on PATH, or set AGENTMARKET_ANVIL "
        "to the binary"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortInUse(ChainError):
    """Something already listens on the port a node was to listen on."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} is in use on {host}: another node (or another program) listens there; stop it, or start "
            "this one with another --port"
        )
        self.host, self.port = host, port


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`PortInUse` if a listening socket holds ``host:port`` (a socket in TIME_WAIT does not)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as anvil binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None
            raise ChainError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _listening_socket_inodes(port: int) -> set[str] | None:
    """Inodes of the TCP sockets listening on ``port`` (Linux ``/proc/net/tcp*``); None where /proc cannot tell."""
    inodes: set[str] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes if found else None


def process_listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a socket listening on TCP ``port``; None where this cannot be told (no /proc)."""
    inodes = _listening_socket_inodes(port)
    if inodes is None:
        return None
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            if target.startswith("socket:[") and target[len("socket:[") : -1] in inodes:
                return True
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when this process dies, even by SIGKILL (no orphans)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class AnvilNode:
    """An anvil process on 127.0.0.1 that this process owns: started, ready-checked, always stopped.

    :meth:`start` makes sure that what answers on the port is this anvil: it refuses a port something
    already listens on (:class:`PortInUse`), and once the node answers it checks that the answering
    socket is its own process's (Linux ``/proc``), so no deployment ever lands on another node.
    """

    def __init__(self, port: int | None = None, binary: Path | None = None, chain_id: int = LOCAL_CHAIN_ID) -> None:
        self.port = port or _free_port()
        self.binary = binary or find_anvil()
        self.chain_id = chain_id
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._home: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running node, or None."""
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit code of a node that exited on its own; None while it runs (and when not started)."""
        return self._process.poll() if self._process else None

    def start(self, timeout: float = 15.0) -> str:
        """Start the node and wait until it answers JSON-RPC; returns its URL.

        Raises :class:`ChainError` (one line) when the binary is missing, the port is in use
        (:class:`PortInUse`), anvil exits at start, or it does not answer within ``timeout`` seconds;
        the node is stopped then.
        """
        if not self.binary.is_file():
            raise ChainError(f"anvil binary not found at {self.binary}: {INSTALL_ANVIL}")
        check_port_free("127.0.0.1", self.port)
        self._home = tempfile.TemporaryDirectory(prefix="agentmarket-anvil-")
        command = [
            str(self.binary),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--mnemonic", DEV_MNEMONIC,
            "--accounts", str(DEV_ACCOUNT_COUNT),
            "--balance", str(DEV_BALANCE_ETH),
            "--hardfork", "prague",
            "--order", "fifo",  # a batch of transactions runs in the order it arrived (marketplace.chain.rawtx)
            "--cache-path", self._home.name,
            "--quiet",
        ]  # fmt: skip
        env = {**os.environ, "HOME": self._home.name}
        try:
            self._process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us; we stop anvil in order
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self.stop()
            raise ChainError(f"cannot run anvil at {self.binary}: {exc.strerror or exc}") from None
        atexit.register(self.stop)
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        while time.monotonic() < deadline:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                self._exited(process)
            try:
                answered = requests.post(self.url, json=payload, timeout=1).ok
            except requests.exceptions.RequestException:
                answered = False
            if answered:
                owner = process_listens_on(process.pid, self.port)
                if owner or (owner is None and process.poll() is None):
                    return
                if process.poll() is not None:  # it failed to bind while another program answered
                    self._exited(process)
                # Another program answers on the port, and this anvil has not bound it (yet): wait for either.
            time.sleep(0.02)
        self.stop()
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f}s")

    def _exited(self, process: subprocess.Popen[bytes]) -> NoReturn:
        """Raise the one-line error of an anvil that exited at start (stopped and cleaned up first)."""
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        self.stop()
        if "Address already in use" in stderr:
            raise PortInUse("127.0.0.1", self.port)
        last = stderr.strip().splitlines()[-1][-300:] if stderr.strip() else "no message"
        raise ChainError(f"anvil exited at start (code {process.returncode}): {last}")

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr:
            process.stderr.close()
        if self._home is not None:
            self._home.cleanup()
            self._home = None
        atexit.unregister(self.stop)

    def __enter__(self) -> AnvilNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
