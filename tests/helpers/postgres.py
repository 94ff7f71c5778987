"""A throwaway PostgreSQL server for the test session, and fresh databases of either engine on demand.

Where the server comes from, in this order:

1. ``AGENTMARKET_TEST_POSTGRES_URL``: a running server, as the URL of a role that may ``CREATE DATABASE``
   (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``);
2. PostgreSQL's server programs (``initdb``, ``postgres``), looked for in ``AGENTMARKET_TEST_POSTGRES_BIN``,
   on ``PATH``, through ``pg_config --bindir`` and in ``/usr/lib/postgresql/<version>/bin`` (Debian's
   ``postgresql`` package, which ``make test`` installs when it is missing): a new cluster in a temporary
   directory, listening on a Unix socket only, run as an unprivileged user when we are root (``initdb``
   refuses root), and killed with this process if it dies (``PR_SET_PDEATHSIG``).

If neither exists, or the ``postgres`` extra (psycopg) is not installed, the PostgreSQL cases skip and say
which of these to provide.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

URL_ENV = "AGENTMARKET_TEST_POSTGRES_URL"
BIN_ENV = "AGENTMARKET_TEST_POSTGRES_BIN"
#: Why PostgreSQL cases skip when no server can be had.
HOW_TO_GET_ONE = (
    "no PostgreSQL server for the tests: install Debian's `postgresql` package (`make test` does, as root), "
    f"put PostgreSQL's bin directory on PATH or in {BIN_ENV}, or set {URL_ENV} to a server's URL"
)


class Unavailable(Exception):
    """No PostgreSQL server can be had here (the message says what to install)."""


def find_bindir() -> Path | None:
    """A directory holding PostgreSQL's ``initdb`` and ``postgres`` programs, or None."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(found.stdout.strip()))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates.extend(p / "bin" for p in versions)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to stop the server (SIGQUIT: immediate shutdown) when the test process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on (``admin_url``: a superuser's URL)."""

    admin_url: URL
    process: subprocess.Popen[bytes] | None = None
    home: Path | None = None
    created: set[str] = field(default_factory=set)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return self.admin_url.set(drivername="postgresql+psycopg", database=database).render_as_string(
            hide_password=False
        )

    def fresh_database(self, name: str) -> str:
        """An empty database called ``name`` (created the first time, emptied after that); its URL."""
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                if name not in self.created:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                    self.created.add(name)
        finally:
            engine.dispose()
        if name in self.created:
            engine = create_engine(self.url(name), isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as connection:
                    connection.execute(text("DROP SCHEMA public CASCADE"))
                    connection.execute(text("CREATE SCHEMA public"))
            finally:
                engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        """Stop a server this process started (fast shutdown) and delete its files; safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root, whom initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise Unavailable("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


def _wait_ready(server: PostgresServer, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    engine = create_engine(server.url("postgres"))
    try:
        while True:
            assert server.process is not None
            if server.process.poll() is not None:
                raise Unavailable(f"postgres exited at start: {log.read_text(errors='replace')[-500:]}")
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise Unavailable(f"postgres did not accept connections within {timeout:.0f} s") from None
                time.sleep(0.05)
    finally:
        engine.dispose()


def start_server(timeout: float = 60.0) -> PostgresServer:
    """A PostgreSQL server for this test session (see the module's docstring); raises Unavailable."""
    try:
        import psycopg  # noqa: F401  (the `postgres` extra)
    except ImportError:
        raise Unavailable("psycopg is not installed: pip install -e '.[postgres]' (the dev extra has it)") from None
    if os.environ.get(URL_ENV):
        return PostgresServer(admin_url=make_url(os.environ[URL_ENV]))
    bindir = find_bindir()
    if bindir is None:
        raise Unavailable(HOW_TO_GET_ONE)
    user = _server_user()
    home = Path(tempfile.mkdtemp(prefix="agentmarket-pg-"))
    as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    if user is not None:
        os.chown(home, user.pw_uid, user.pw_gid)
    data, log = home / "data", home / "postgres.log"
    try:
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=home, **as_user,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise Unavailable(f"initdb failed: {(initdb.stderr or initdb.stdout).strip()[-500:]}")
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-k", str(home), "-c", "listen_addresses=",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
                preexec_fn=_die_with_parent, **as_user,
            )  # fmt: skip
        server = PostgresServer(
            admin_url=URL.create("postgresql+psycopg", username="postgres", database="postgres",
                                 query={"host": str(home)}),
            process=process, home=home,
        )  # fmt: skip
        try:
            _wait_ready(server, log, timeout)
        except BaseException:
            server.stop()
            raise
        return server
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise


@dataclass
class Databases:
    """Fresh read-model databases of one engine (``name``: "sqlite" or "postgresql") for one test module."""

    name: str
    prefix: str
    directory: Path
    server: PostgresServer | None = None

    def url(self, label: str = "main") -> str:
        """The SQLAlchemy URL of an empty database (``label`` tells apart several in one test)."""
        if self.server is not None:
            return self.server.fresh_database(f"{self.prefix}_{label}")
        path = self.directory / f"{label}.sqlite3"
        for leftover in self.directory.glob(f"{label}.sqlite3*"):
            leftover.unlink()
        return f"sqlite:///{path}"
