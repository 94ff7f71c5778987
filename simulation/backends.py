"""Where a sweep's runs execute: one small interface, three backends.

A backend maps a picklable function over picklable jobs and yields each result as soon as it is ready
(completion order, not job order). The unit of work is one run (a grid point, later a (point, seed) pair):
``run(job)`` must build its own chain and return a picklable value.

- ``Serial``: in this process, one job after another (``--workers 1``, the default).
- ``ProcessPool``: ``workers`` fresh interpreters (``spawn``), each job with its own chain; Ctrl-C or
  SIGTERM terminates every worker at once.
- ``RayBackend``: each job a Ray task (``num_cpus=1``, no retries), on a local Ray instance started for the
  sweep (``ray.init()``) or on the cluster at ``address``. Needs the ``ray`` extra
  (``pip install 'agentmarket[ray]'``). Ray workers may run on other machines, so ``shared_filesystem`` is
  False: the caller ships a run's output folder back as bytes (``pack_folder`` / ``unpack_folder``).

``make_backend`` picks one from the CLI's ``--backend``/``--workers``/``--ray-address``; it raises
``BackendUnavailable`` (one line saying what to install or fix) before any job runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from marketplace.errors import AgentmarketError

Job = TypeVar("Job")
Result = TypeVar("Result")

#: The names ``--backend`` accepts.
BACKENDS = ("process", "ray")


class BackendUnavailable(AgentmarketError):
    """The chosen backend cannot run here (Ray not installed, or its cluster unreachable); says what to do."""


class Backend:
    """Runs ``run`` over ``jobs``; ``map`` yields results in completion order and stops every job still
    running when the caller stops iterating (an exception, Ctrl-C, or closing the generator)."""

    #: Whether a job's files written under a path of this machine are visible to the caller.
    shared_filesystem: ClassVar[bool] = True
    name: ClassVar[str] = "serial"

    def map(self, run: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        """Yield ``run(job)`` for every job (here: in order, in this process)."""
        for job in jobs:
            yield run(job)


class Serial(Backend):
    """One job after another in this process."""


def _worker_signals() -> None:  # pragma: no cover - runs in the worker processes
    """Workers leave Ctrl-C to the parent (which stops them all), and unwind on SIGTERM, so a simulation's
    temporary directory and any anvil node it started are cleaned up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> None:  # pragma: no cover - runs in the worker processes
    raise SystemExit(128 + signum)


class ProcessPool(Backend):
    """``workers`` spawned processes (a fresh interpreter, and chain, per worker); terminated at once when the
    caller stops (SIGTERM to every worker still running a job)."""

    name = "process"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, run: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        """Yield ``run(job)`` for every job as the workers finish them."""
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(processes=min(self.workers, len(jobs)), initializer=_worker_signals)
        finished = False
        try:
            yield from pool.imap_unordered(run, jobs)
            pool.close()  # every job done: let the idle workers exit by themselves (a SIGTERM now would hit
            pool.join()  # them in their interpreter's shutdown and print a traceback)
            finished = True
        finally:
            if not finished:
                pool.terminate()
                pool.join()


def _ray() -> Any:
    """The ``ray`` module, or ``BackendUnavailable`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(
            "--backend ray needs Ray: pip install 'agentmarket[ray]' (or use the default --backend process)"
        ) from None
    return ray


class RayBackend(Backend):
    """Each job a Ray task with one CPU and no retries (a run is not idempotent on a shared chain; each has its
    own). ``address`` None starts a local Ray instance for the duration of ``map`` (unless this process already
    joined one: then that one is used and left running); otherwise it joins the cluster at ``address``
    (``ray://host:10001`` or ``host:6379``). Ray's own log lines stay out of the terminal: workers' output is
    not forwarded (``log_to_driver=False``) and the driver logs only errors."""

    name = "ray"
    shared_filesystem = False

    def __init__(self, address: str | None = None) -> None:
        self.ray = _ray()
        self.address = address
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Fail fast on a cluster address nothing listens at (``ray.init`` would wait for it forever)."""
        if self.address is None or self.address in ("auto", "local"):
            return
        host, sep, port = self.address.removeprefix("ray://").rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise BackendUnavailable(f"--ray-address {self.address!r} must look like HOST:PORT or ray://HOST:PORT")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot join the Ray cluster at {self.address}: {exc.strerror or exc} "
                "(is `ray start --head` running there, and is the port the head's GCS or client port?)"
            ) from None

    def _start(self) -> bool:
        """Join or start Ray; True when this call started it (so ``map`` shuts it down)."""
        self._check_reachable()
        if self.ray.is_initialized():
            return False
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR,
                                   "configure_logging": True}  # fmt: skip
        if self.address is None:
            options["include_dashboard"] = False
        try:
            self.ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"cannot start or join {where}: {first}") from None
        for name in ("ray", "ray.data", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.ERROR)
        return True

    def map(self, run: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        """Yield ``run(job)`` for every job as its Ray task finishes; a failing task's exception is raised
        (its own type, not Ray's wrapper) after every other task was cancelled."""
        if not jobs:
            return
        ray = self.ray
        started = self._start()
        task = ray.remote(num_cpus=1, max_retries=0)(run)
        pending = [task.remote(job) for job in jobs]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(ready[0])
                except ray.exceptions.RayTaskError as failed:
                    raise failed.as_instanceof_cause() from None
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def make_backend(backend: str = "process", *, workers: int = 1, ray_address: str | None = None) -> Backend:
    """The backend for ``--backend`` (``process``: ``Serial`` for one worker, else ``ProcessPool``; ``ray``).

    Raises ``BackendUnavailable`` for an unknown name, a Ray address without ``--backend ray``, or Ray not
    installed.
    """
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "ray":
        return RayBackend(ray_address)
    if ray_address is not None:
        raise BackendUnavailable("--ray-address needs --backend ray")
    return Serial() if workers <= 1 else ProcessPool(workers)


# --------------------------------------------------------------------------------------------------
# Shipping a run's folder back from a worker that does not share our file system


def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}`` (sorted)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def unpack_folder(files: dict[str, bytes], folder: Path) -> None:
    """Write ``files`` (from ``pack_folder``) under ``folder``; a path escaping ``folder`` raises ``ValueError``."""
    root = folder.resolve()
    for name, data in files.items():
        target = (folder / name).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ValueError(f"refusing to write {name!r} outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
