"""``agentmarket node`` + ``agentmarket serve``: both real processes on 127.0.0.1, as a user starts them.

The CLI test modules' module fixture is ``node_and_server(home, *serve_args)``; a module that restarts the
server with other settings drives a ``Stack`` itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.cli import AGENTMARKET, free_port, run_cli, wait_for_json

#: ``serve`` arguments of the CLI market tests: model 2 is ``builtins:len``, model 3 the digits classifier.
TWO_MODELS = ("--model", "2=builtins:len", "--model", "3=agents.learning:digits_classifier")

#: How long a node may take to write its manifest, and a server to answer /healthz (seconds).
START_SECONDS = 60


class Stack:
    """A node and a server in ``home``, on free ports; ``env`` is what the CLI needs to use them
    (RPC, server URL, keystore password and a cheap scrypt cost)."""

    def __init__(self, home: Path, password: str = "correct horse") -> None:
        self.home = home
        self.rpc_port, self.api_port = free_port(), free_port()
        self.manifest = home / ".agentmarket" / "deployment.json"
        self.node: subprocess.Popen[str] | None = None
        self.server: subprocess.Popen[str] | None = None
        self.env = {"AGENTMARKET_RPC": f"http://127.0.0.1:{self.rpc_port}",
                    "AGENTMARKET_SERVER": f"http://127.0.0.1:{self.api_port}",
                    "AGENTMARKET_PASSWORD": password, "AGENTMARKET_KEYSTORE_SCRYPT_N": "1024"}  # fmt: skip

    def start_node(self) -> None:
        """``agentmarket node --port RPC_PORT``, until it has written the deployment manifest."""
        self.node = subprocess.Popen([*AGENTMARKET, "node", "--port", str(self.rpc_port)], cwd=self.home,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while not self.manifest.exists():
            assert self.node.poll() is None, self.node.stderr.read() if self.node.stderr else "node exited"
            assert time.monotonic() < deadline, "the node wrote no manifest"
            time.sleep(0.1)

    def start_server(self, *args: str, settle_interval: str | None = "3600", **env: str) -> None:
        """``agentmarket serve`` on the node with extra ``args`` (``--model ID=…``) and ``env``, until it answers
        /healthz. ``settle_interval`` (seconds, $AGENTMARKET_SETTLE_INTERVAL; None: the default): 3600 keeps
        settlement rounds out of a module, so earnings checks see only what its tests paid."""
        settle = {} if settle_interval is None else {"AGENTMARKET_SETTLE_INTERVAL": settle_interval}
        self.server = subprocess.Popen([*AGENTMARKET, "serve", "--rpc", self.env["AGENTMARKET_RPC"], "--manifest",
                                        str(self.manifest), "--port", str(self.api_port), *args], cwd=self.home,
                                       env={**os.environ, **settle, **env},
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_for_json(f"{self.env['AGENTMARKET_SERVER']}/healthz", self.server, START_SECONDS)

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)
            self.server = None

    def stop(self) -> None:
        """Stop the server, then the node (also when they were never started)."""
        self.stop_server()
        if self.node is not None:
            self.node.terminate()
            self.node.wait(timeout=30)
            self.node = None

    def cli(self, *args: str, wallet: str) -> subprocess.CompletedProcess[str]:
        """``agentmarket ARGS`` in ``home`` against this stack, with the keystore ``home/wallet``."""
        return cli((self.home, self.env), *args, wallet=wallet)


@contextmanager
def node_and_server(
    home: Path, *serve_args: str, password: str = "correct horse", settle_interval: str | None = "3600", **env: str
) -> Iterator[Stack]:
    """A started ``Stack`` (see ``Stack.start_server`` for the arguments); always stopped at the end."""
    stack = Stack(home, password)
    try:
        stack.start_node()
        stack.start_server(*serve_args, settle_interval=settle_interval, **env)
        yield stack
    finally:
        stack.stop()


def cli(stack: tuple[Path, dict[str, str], *tuple[object, ...]], *args: str, wallet: str = "nobody.json",
        **extra_env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``agentmarket ARGS`` against a module's stack fixture (``(home, env, …)``: ``Stack.home``, ``Stack.env``),
    in ``home``, with the keystore ``home/wallet`` and ``extra_env`` on top."""
    home, env = stack[0], stack[1]
    return run_cli(*args, cwd=home, env={**env, "AGENTMARKET_WALLET": str(home / wallet), **extra_env})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded (its stderr in the failure message)."""
    assert result.returncode == 0, result.stderr
    return result.stdout
