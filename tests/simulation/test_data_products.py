"""A run's data products: the per-transaction log read from the chain, the paid calls per round, per-round
revenue, Parquet beside CSV, the reproducibility manifest (its command reproduces metrics.json byte for byte),
and an independent recomputation of every party's revenue (pure Python and Mesa) from the run's decisions.

One tiny run (the fast engine) serves the module; one full-engine run checks that both engines log the same
payments."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from web3 import Web3

from simulation.engine import run_simulation
from simulation.manifest import scenario_toml
from simulation.reference import ModelTerms, mesa_model, recompute, run_decisions, split_revenue
from simulation.runner import simulate
from simulation.scenario import load_scenario, packaged_scenarios
from simulation.txlog import RunRecord, write_table
from tests.helpers.cli import run_cli
from tests.helpers.simulation import TINY

BASELINE = Path(__file__).parents[2] / "scenarios" / "baseline.toml"
#: TINY with three rounds and two builders (so royalties flow from two models and rounds differ).
SCENARIO = [*TINY, "rounds=3", "builders.count=2", "engine=fast"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("products") / "run"
    simulate(load_scenario(BASELINE, SCENARIO), out)
    return out


def test_the_transaction_log_reconciles_with_the_runs_figures(run_dir: Path) -> None:
    """Every payment read from the chain adds up to what metrics.json and the CSVs say, party by party."""
    transfers = rows(run_dir / "transactions.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    producers, builders = rows(run_dir / "producers.csv"), rows(run_dir / "builders.csv")
    total: dict[str, int] = defaultdict(int)
    for t in transfers:
        total[t["kind"]] += int(t["amount"])
    assert set(total) <= {"mint", "license", "channel deposit", "voucher claim", "channel refund", "royalty release",
                          "withdrawal", "fee"}  # fmt: skip
    assert total["license"] == sum(int(b["spend"]) for b in builders) > 0
    assert total["voucher claim"] == metrics["consumer_spend"] > 0
    assert total["fee"] == metrics["protocol_fee"] > 0
    for index, producer in enumerate(producers):
        inflow = [t for t in transfers if t["payee_name"] == f"producer {index}"]
        assert [t["kind"] for t in inflow] == ["withdrawal"]
        assert inflow[0]["payer_name"] == f"producer {index}'s dataset vault"
        assert int(inflow[0]["amount"]) == int(producer["revenue"])
        vault = f"producer {index}'s dataset vault"
        licenses = [t for t in transfers if t["kind"] == "license" and t["payee_name"] == vault]
        bought = sum(str(producer["asset_id"]) in b["parents"].split(";") for b in builders)
        assert len(licenses) == bought and all(t["payer_name"].startswith("builder ") for t in licenses)
    for builder in builders:
        paid = sum(int(t["amount"]) for t in transfers if t["payee_name"] == f"builder {builder['index']}"
                   and t["kind"] == "withdrawal")  # fmt: skip
        assert paid == int(builder["revenue"])
    # rounds from block boundaries: licenses before round 1, deposits in rounds, claims and releases at the end
    rounds = 3
    assert {t["round"] for t in transfers if t["kind"] == "license"} == {"0"}
    assert {t["round"] for t in transfers if t["kind"] == "channel deposit"} <= {"1", "2", "3"}
    assert {(t["round"], t["phase"]) for t in transfers if t["kind"] in ("voucher claim", "withdrawal", "fee")} == {
        (str(rounds + 1), "end")
    }
    blocks = [int(t["block"]) for t in transfers]
    assert blocks == sorted(blocks) and len({(t["tx_hash"], t["log_index"]) for t in transfers}) == len(transfers)
    assert all(t["tx_hash"].startswith("0x") and len(t["tx_hash"]) == 66 for t in transfers)


def test_vouchers_and_round_revenue_add_up_to_the_runs_figures(run_dir: Path) -> None:
    """Paid calls per round equal rounds.csv; each party's per-round revenue sums to its revenue, to the unit,
    with license sales in round 0 and royalties after."""
    vouchers = rows(run_dir / "vouchers.csv")
    per_round: dict[int, int] = defaultdict(int)
    for v in vouchers:
        per_round[int(v["round"])] += int(v["amount"])
    assert {int(r["round"]): int(r["consumer_spend"]) for r in rows(run_dir / "rounds.csv")} == dict(per_round)
    consumers = rows(run_dir / "consumers.csv")
    for consumer in consumers:
        mine = [v for v in vouchers if v["consumer"] == consumer["index"]]
        assert sum(int(v["amount"]) for v in mine) == int(consumer["spend"])
        assert sum(int(v["calls"]) for v in mine) == int(consumer["answered"])
    revenue = rows(run_dir / "round_revenue.csv")
    assert {r["round"] for r in revenue} == {"0", "1", "2", "3"}
    for producer in rows(run_dir / "producers.csv"):
        mine = [r for r in revenue if r["party"] == f"producer {producer['index']}"]
        assert sum(int(r["revenue"]) for r in mine) == int(producer["revenue"])
        assert sum(int(r["license"]) for r in mine) == int(producer["license_revenue"]) == int(mine[0]["revenue"])
        assert sum(int(r["calls"]) for r in mine) == int(producer["royalty_revenue"]) > 0
    for builder in rows(run_dir / "builders.csv"):
        mine = [r for r in revenue if r["party"] == f"builder {builder['index']}"]
        assert sum(int(r["revenue"]) for r in mine) == int(builder["revenue"])
    fee = sum(int(r["revenue"]) for r in revenue if r["party"] == "protocol")
    assert fee == json.loads((run_dir / "metrics.json").read_text())["protocol_fee"]


def test_parquet_files_hold_what_the_csvs_hold(run_dir: Path) -> None:
    import pyarrow.parquet as pq

    for stem in ("transactions", "vouchers", "round_revenue"):
        table = pq.read_table(run_dir / f"{stem}.parquet").to_pylist()
        assert [{k: str(v) for k, v in row.items()} for row in table] == rows(run_dir / f"{stem}.csv"), stem


def test_without_pyarrow_only_csv_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    written = write_table(tmp_path, "t", ["a", "b"], [[1, "x"], [2**70, "y"]])
    assert written == [tmp_path / "t.csv"] and not (tmp_path / "t.parquet").exists()
    assert (tmp_path / "t.csv").read_text() == f"a,b\n1,x\n{2**70},y\n"
    monkeypatch.undo()
    import pyarrow.parquet as pq

    write_table(tmp_path, "t", ["a", "b"], [[1, "x"], [2**70, "y"]])
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == [{"a": "1", "b": "x"}, {"a": str(2**70), "b": "y"}]


def test_the_manifest_reruns_the_run_byte_for_byte(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["engine"] == "fast" and manifest["chain"] == {"target": "embedded", "kind": "embedded",
                                                                 "chain_id": manifest["chain"]["chain_id"]}  # fmt: skip
    assert manifest["seeds"] == [load_scenario(BASELINE).seed] and manifest["project"]["version"] == "0.1.0"
    head = subprocess.run(["git", "-C", str(BASELINE.parents[1]), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    assert manifest["project"]["commit"] == (head or None)  # this checkout's commit (None without git)
    packages = manifest["packages"]
    assert packages["python"].count(".") == 2 and all(packages[n] for n in ("numpy", "scikit-learn", "web3", "py-evm"))
    assert manifest["scenario"]["toml"] == (run_dir / "scenario.toml").read_text()
    assert manifest["argv"][:3] == ["agentmarket", "simulate", "scenario.toml"]
    result = run_cli(*manifest["argv"][1:], cwd=run_dir, timeout=300)
    assert result.returncode == 0, result.stderr
    rerun = run_dir / manifest["argv"][manifest["argv"].index("--out") + 1]
    assert (rerun / "metrics.json").read_bytes() == (run_dir / "metrics.json").read_bytes()
    assert (rerun / "round_revenue.csv").read_bytes() == (run_dir / "round_revenue.csv").read_bytes()


@pytest.mark.parametrize("name", packaged_scenarios())
def test_the_scenario_as_run_reads_back_to_the_same_scenario(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name, ["royalty.rule=equal", "seed=9"])
    (tmp_path / "s.toml").write_text(scenario_toml(scenario))
    assert load_scenario(tmp_path / "s.toml").model_dump() == scenario.model_dump()


def test_a_free_rider_scenario_reads_back_with_its_tables(tmp_path: Path) -> None:
    scenario = load_scenario("free-riders", ["producers.split={owner=1, identities=2}"])
    text = scenario_toml(scenario)
    assert "[[producers.duplicates]]" in text and "[producers.split]" in text
    (tmp_path / "s.toml").write_text(text)
    assert load_scenario(tmp_path / "s.toml").model_dump() == scenario.model_dump()


def test_the_independent_model_recomputes_every_partys_revenue(run_dir: Path) -> None:
    """From the decisions alone (parents, shares, prices, calls per model), with the contracts' floor arithmetic:
    every party's revenue equals what the chain paid, to the unit; the Mesa model agrees round by round."""
    producers, builders = rows(run_dir / "producers.csv"), rows(run_dir / "builders.csv")
    revenue = recompute(run_dir)
    assert {p["asset_id"]: p["revenue"] for p in producers} == {str(k): str(v) for k, v in revenue.producer.items()}
    assert {p["asset_id"]: p["license_revenue"] for p in producers} == {
        str(k): str(v) for k, v in revenue.producer_license.items()
    }
    assert {b["index"]: b["revenue"] for b in builders} == {str(k): str(v) for k, v in revenue.builder.items()}
    assert revenue.fee == json.loads((run_dir / "metrics.json").read_text())["protocol_fee"]

    model = mesa_model(run_decisions(run_dir))
    while model.running:
        model.step()
    by_round: dict[tuple[int, str, int], int] = {(r, role, i): v for r, role, i, v in model.revenue_table()}
    asset_of = {p["index"]: int(p["asset_id"]) for p in producers}
    so_far: Counter[tuple[str, int]] = Counter()
    for row in rows(run_dir / "round_revenue.csv"):
        key = (row["role"], asset_of[row["index"]] if row["role"] == "producer" else int(row["index"]))
        so_far[key] += int(row["revenue"])
        assert by_round[(int(row["round"]), *key)] == so_far[key], row


def test_the_floor_arithmetic_by_hand() -> None:
    """A call revenue of 1,000 units through a model with two parents (30% and 20%) at a 1% fee, licenses 500."""
    terms = ModelTerms(model_id=3, builder=0, parents=(1, 2), shares_bps=(3000, 2000))
    revenue = split_revenue(100, {1: 500, 2: 0}, [terms], {3: 1000})
    # model vault: fee 10, parent 1: 1000*3000*9900/1e8 = 297, parent 2: 198, builder: 1000*5000*9900/1e8 = 495
    # dataset vaults: 1: (500 + 297) -> 789 (fee 7), 2: 198 -> 196 (fee 1)
    assert revenue.producer == {1: 789, 2: 196} and revenue.producer_license == {1: 495, 2: 0}
    assert revenue.builder == {0: 495} and revenue.fee == 10 + 7 + 1
    assert revenue.total == 1500 - 2  # rounding dust stays in the vaults


def test_both_engines_log_the_same_payments(run_dir: Path, tmp_path: Path) -> None:
    """The full engine (gateway, SDK, wallets) on the same scenario: the same payments (kind, payer, payee,
    amount, round), though not the same transactions (hashes, blocks); its revenue recomputed independently."""
    scenario = load_scenario(BASELINE, SCENARIO)
    record = RunRecord()
    result = run_simulation(scenario, work_dir=tmp_path, engine="full", record=record)
    payments = Counter((t.kind, t.payer_name, t.payee_name, t.amount, t.round) for t in record.transfers)
    logged = Counter((t["kind"], t["payer_name"], t["payee_name"], int(t["amount"]), int(t["round"]))
                     for t in rows(run_dir / "transactions.csv"))  # fmt: skip
    assert payments == logged
    assert record.decisions is not None
    assert sum(record.decisions.license_paid().values()) == sum(b.spend for b in result.builders)
    revenue = record.decisions.revenue()
    assert revenue.producer == {p.asset_id: p.revenue for p in result.producers}
    assert revenue.builder == {b.index: b.revenue for b in result.builders} and revenue.fee == result.protocol_fee


def test_the_csvs_split_producer_revenue_and_name_validation_accuracy(run_dir: Path) -> None:
    """producers.csv splits each producer's revenue into license sales and royalties; builders.csv names its
    accuracy for what it is (validation accuracy), the same number result.json keeps under ``accuracy``."""
    result = json.loads((run_dir / "result.json").read_text())
    for producer, row in zip(result["producers"], rows(run_dir / "producers.csv"), strict=True):
        assert int(row["license_revenue"]) + int(row["royalty_revenue"]) == int(row["revenue"]) == producer["revenue"]
        assert int(row["royalty_revenue"]) == producer["royalty_revenue"] > 0 and row["owner"] == ""
    builders = rows(run_dir / "builders.csv")
    report = (run_dir / "report.md").read_text()
    assert "accuracy" not in builders[0] and "test accuracy" not in report.lower() and "Validation accuracy" in report
    assert [float(b["validation_accuracy"]) for b in builders] == [b["accuracy"] for b in result["builders"]]


def test_the_log_reads_the_same_payments_from_anvil(run_dir: Path, tmp_path: Path) -> None:
    """The same scenario on a real anvil node: the same payments logged, and the manifest names anvil's version."""
    simulate(load_scenario(BASELINE, SCENARIO), tmp_path / "anvil", chain_target="anvil")

    def payments(folder: Path) -> Counter[tuple[str, ...]]:
        return Counter((t["kind"], t["payer_name"], t["payee_name"], t["amount"], t["round"])
                       for t in rows(folder / "transactions.csv"))  # fmt: skip

    assert payments(tmp_path / "anvil") == payments(run_dir)
    assert (tmp_path / "anvil" / "round_revenue.csv").read_bytes() == (run_dir / "round_revenue.csv").read_bytes()
    manifest = json.loads((tmp_path / "anvil" / "manifest.json").read_text())
    assert manifest["chain"]["kind"] == "anvil" and manifest["packages"]["anvil"].startswith("anvil")
    assert "--chain anvil" in manifest["command"]


def test_a_transfer_the_run_did_not_make_is_logged_as_other_under_its_addresses() -> None:
    """A transfer between addresses the run does not know (or a known pair that no step of the run makes) is
    kind ``other``, named by its addresses; a mint is a mint whoever receives it."""
    from simulation.txlog import ZERO_ADDRESS, _transfer

    stranger, consumer = "0x" + "11" * 20, "0x" + "22" * 20
    stranger, consumer = (Web3.to_checksum_address(a) for a in (stranger, consumer))

    def log(payer: str, payee: str, block: int) -> dict:
        return {"topics": [b"", bytes(12) + bytes.fromhex(payer[2:]), bytes(12) + bytes.fromhex(payee[2:])],
                "blockNumber": block, "transactionHash": b"\x01" * 32, "logIndex": 0,
                "data": (5).to_bytes(32, "big")}  # fmt: skip

    names, roles = {consumer: "consumer 0"}, {consumer: "consumer"}
    other = _transfer(log(consumer, stranger, 12), names, roles, [10, 11, 13], 2)
    assert (other.kind, other.payer_name, other.payee_name, other.amount) == ("other", "consumer 0", stranger, 5)
    assert (other.round, other.phase) == (2, "round") and other.tx_hash == "0x" + "01" * 32
    minted = _transfer(log(ZERO_ADDRESS, stranger, 14), names, roles, [10, 11, 13], 2)
    assert (minted.kind, minted.round, minted.phase) == ("mint", 3, "end")
    assert _transfer(log(consumer, consumer, 10), names, roles, [10, 11, 13], 2).round == 0  # the set-up's last block


def test_the_manifest_of_a_run_over_seeds_or_a_sweep_names_its_command() -> None:
    from simulation.manifest import sweep_manifest

    scenario = load_scenario(BASELINE)
    seeded = sweep_manifest(scenario, params=[], seeds=(7, 8, 9), chain_target="embedded", workers=2, backend="process",
                            command="simulate")  # fmt: skip
    assert seeded["kind"] == "simulate over seeds" and seeded["seeds"] == [7, 8, 9]
    assert seeded["command"] == "agentmarket simulate scenario.toml --out rerun --chain embedded --workers 2 --seeds 3"
    grid = sweep_manifest(scenario, params=["royalty.rule=none,equal"], seeds=None, chain_target="anvil", workers=1,
                          backend="ray", ray_address="ray://head:10001")  # fmt: skip
    assert grid["kind"] == "sweep" and grid["argv"] == [
        "agentmarket", "sweep", "scenario.toml", "--param=royalty.rule=none,equal", "--out", "rerun", "--chain",
        "anvil", "--workers", "1", "--backend", "ray", "--ray-address", "ray://head:10001",
    ]  # fmt: skip
    assert grid["data"]["repeated_queries"] == 0 and grid["scenario"]["toml"] == scenario_toml(scenario)


def test_a_license_bought_in_a_later_round_counts_from_that_round() -> None:
    """Prices and purchases that change over rounds are followed as paid: a license of round 2 is in the books
    from round 2 on, calls from the round they were paid in."""
    from simulation.reference import decisions_of

    builder = type("B", (), {"index": 0, "model_id": 3, "parents": (1, 2), "shares_bps": (3000, 2000)})
    calls = [{"round": 1, "consumer": 0, "model_id": 3, "calls": 2, "amount": 1000}]
    decisions = decisions_of(100, [1, 2], [builder], [(0, 1, 500), (2, 2, 700), (9, 2, 1)], calls, rounds=2)
    assert decisions.license_paid(0) == {1: 500, 2: 0} and decisions.license_paid(2) == {1: 500, 2: 701}
    assert decisions.revenue(1) == split_revenue(100, {1: 500, 2: 0}, decisions.models, {3: 1000})
    assert decisions.revenue() == split_revenue(100, {1: 500, 2: 701}, decisions.models, {3: 1000})
    assert decisions.revenue(0).builder == {0: 0} and decisions.revenue(0).producer == {1: 495, 2: 0}
