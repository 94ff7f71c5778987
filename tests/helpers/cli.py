"""The ``agentmarket`` command as a user runs it: a subprocess, on free ports of 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

AGENTMARKET = [sys.executable, "-m", "marketplace.cli"]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTMARKET, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_json(url: str, process: subprocess.Popen[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        try:
            return httpx.get(url, timeout=2).raise_for_status().json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@contextlib.contextmanager
def spawn_cli(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``agentmarket ARGS`` with its output in ``log``; stopped on the way out if it still runs (``stop_process``)."""
    with log.open("ab") as out:
        process = subprocess.Popen([*AGENTMARKET, *args], cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    """Send ``sig`` (if it still runs) and wait 30 s, then SIGKILL; its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode
