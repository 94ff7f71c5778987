"""Where a sweep's grid points run: the process pool (the default) and Ray. A small sweep through the CLI on a
Ray cluster (one local instance for the module, joined by address, as a cluster would be) gives the same
results as the process pool, field by field; a missing Ray or a misplaced option is one line, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulation.backends import RayBackend, make_backend, pack_folder, unpack_folder
from simulation.runner import sweep
from simulation.scenario import load_scenario
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.simulation import TINY

BASELINE = Path(__file__).resolve().parents[2] / "scenarios" / "baseline.toml"
GRID = ["royalty.rule=equal,leave_one_out"]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 CPUs, a small object store); its address, for the CLI to join."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 * 1024,
             logging_level="ERROR")  # fmt: skip
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _same_but_gas(a: dict, b: dict, where: str) -> None:
    """Every field equal; ``gas_used`` may differ by multiples of 12 (a channel's expiry comes from the chain's
    wall-clock timestamp and changes a calldata byte), never by more than a few hundred."""
    assert a.keys() == b.keys(), where
    for key in a:
        if key == "gas_used":
            assert (a[key] - b[key]) % 12 == 0 and abs(a[key] - b[key]) < 1_000, (where, a[key], b[key])
        else:
            assert a[key] == b[key], (where, key, a[key], b[key])


def test_a_ray_sweep_through_the_cli_equals_the_process_pools_field_by_field(ray_address, tmp_path) -> None:
    pool_rows = sweep(load_scenario(BASELINE), [*TINY, *GRID], tmp_path / "pool", workers=2)

    params = [f"--param={p}" for p in [*TINY, *GRID]]
    result = run_cli("sweep", str(BASELINE), *params, "--backend", "ray", "--ray-address", ray_address,
                     "--out", str(tmp_path / "ray"), timeout=400, env={"COLUMNS": "200"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 grid points" in result.stdout and "leave_one_out" in result.stdout
    assert "INFO" not in result.stderr and "(raylet)" not in result.stderr + result.stdout  # Ray's logs stay out

    ray_rows = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert [row["params"] for row in ray_rows] == [row.params for row in pool_rows]
    for pool_row, ray_row in zip(pool_rows, ray_rows, strict=True):
        _same_but_gas(pool_row.to_json()["metrics"], ray_row["metrics"], str(pool_row.params))
    points = sorted(p.name for p in (tmp_path / "pool").glob("point-*"))
    assert len(points) == 2 and points[1].endswith("royalty.rule=leave_one_out")
    for name in points:
        pool, ray = tmp_path / "pool" / name, tmp_path / "ray" / name
        assert {p.name for p in ray.iterdir()} == {p.name for p in pool.iterdir()}  # every file shipped back
        pool_result, ray_result = (json.loads((d / "result.json").read_text()) for d in (pool, ray))
        _same_but_gas(pool_result.pop("chain"), ray_result.pop("chain"), name)
        assert pool_result == ray_result  # every payment, revenue and spend, to the unit
        pool_metrics, ray_metrics = (json.loads((d / "metrics.json").read_text()) for d in (pool, ray))
        _same_but_gas(pool_metrics, ray_metrics, name)
    assert not list((tmp_path / "ray").glob("*.incomplete"))


def test_ray_tasks_yield_every_result_and_a_failing_task_raises_its_own_exception(ray_address) -> None:
    """On the module's Ray instance (joined, so left running): results in completion order, each once; a task's
    exception comes back as itself, not wrapped, and the tasks still pending are cancelled."""
    import ray

    def square(n: int) -> int:  # nested: Ray ships it by value
        return n * n

    def fail_on_two(n: int) -> int:
        if n == 2:
            raise ValueError(f"point {n} failed")
        return n

    assert sorted(RayBackend().map(square, [1, 2, 3])) == [1, 4, 9]
    with pytest.raises(ValueError, match="point 2 failed"):
        list(RayBackend().map(fail_on_two, [2, 1, 3]))
    assert ray.is_initialized()  # not ours to shut down


def test_sweep_without_ray_installed_says_how_to_install_it_in_one_line(tmp_path) -> None:
    hidden = tmp_path / "no-ray"
    hidden.mkdir()
    (hidden / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")  # as if it were not installed
    result = run_cli("sweep", str(BASELINE), "--backend", "ray", "--out", str(tmp_path / "out"),
                     env={"PYTHONPATH": str(hidden)})  # fmt: skip
    assert_one_line_error(result, "--backend ray needs Ray: pip install 'agentmarket[ray]'")
    assert not (tmp_path / "out").exists()  # told before anything ran


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--ray-address", "127.0.0.1:1"], "--ray-address needs --backend ray"),
        (["--backend", "dask"], "unknown backend 'dask'; allowed: process, ray"),
    ],
)
def test_backend_mistakes_are_one_line_errors(options: list[str], message: str, tmp_path) -> None:
    result = run_cli("sweep", str(BASELINE), *options, "--out", str(tmp_path / "out"))
    assert_one_line_error(result, message)


def test_an_unreachable_ray_cluster_is_a_one_line_error_before_any_point_runs(tmp_path) -> None:
    """ray.init would wait forever for a cluster that is not there; the sweep says so at once instead."""
    for address, message in [
        ("127.0.0.1:1", "cannot join the Ray cluster at 127.0.0.1:1: Connection refused (is `ray start --head`"),
        ("ray://127.0.0.1:1", "cannot join the Ray cluster at ray://127.0.0.1:1: Connection refused"),
        ("nowhere", "--ray-address 'nowhere' must look like HOST:PORT or ray://HOST:PORT"),
    ]:
        result = run_cli("sweep", str(BASELINE), "--backend", "ray", "--ray-address", address,
                         "--out", str(tmp_path / "out"), timeout=60)  # fmt: skip
        assert_one_line_error(result, message)
        assert not (tmp_path / "out").exists()


def test_make_backend_picks_serial_pool_or_ray() -> None:
    assert make_backend().name == "serial" and make_backend(workers=3).name == "process"
    assert make_backend(workers=3).workers == 3


def test_a_shipped_folder_cannot_write_outside_its_point(tmp_path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.json").write_bytes(b"{}")
    (source / "sub" / "b.png").write_bytes(b"\x89PNG")
    files = pack_folder(source)
    assert files == {"a.json": b"{}", "sub/b.png": b"\x89PNG"}
    unpack_folder(files, tmp_path / "copy")
    assert pack_folder(tmp_path / "copy") == files
    for name in ("../escaped.txt", "/etc/passwd-copy", "sub/../../x"):
        with pytest.raises(ValueError, match="refusing to write"):
            unpack_folder({name: b"x"}, tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "x").exists()
