"""``agentmarket study`` (issue 16): the three questions — noisy data, copying, Sybil splitting — over the same
seeds under every rule, answered with intervals and paired comparisons; run through the CLI as a subprocess on
a tiny world, its figures checked against what the runs' own files say, and its measures against hand-made
results."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

from simulation.results import Undefined
from simulation.study import copier_ratio, read_study, split_owner_revenue
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.simulation import assert_png

#: Each scenario shrunk to one round with one builder and one consumer (its producers kept: the questions need them).
SMALL = ["rounds=1", "builders.count=1", "builders.models=['knn']", "consumers.count=1",
         "consumers.queries_per_round=3"]  # fmt: skip


def producer(index: int, royalty: int, *, noise: float = 0.0, copy_of: int | None = None, owner: int | None = None,
             revenue: int | None = None) -> dict[str, object]:  # fmt: skip
    data: dict[str, object] = {"index": index, "label_noise": noise, "duplicate_of": copy_of}
    data["royalty_revenue"] = royalty
    data["revenue"] = royalty if revenue is None else revenue
    if owner is not None:
        data["owner"] = owner
    return data


def test_measures_by_hand() -> None:
    copying = {"producers": [producer(0, 500), producer(1, 200), producer(2, 250, copy_of=0),
                             producer(3, 0, copy_of=1)]}  # fmt: skip
    assert copier_ratio(copying) == pytest.approx(250 / 700)
    nothing = {"producers": [producer(0, 0), producer(1, 0, copy_of=0)]}
    assert isinstance(copier_ratio(nothing), Undefined)
    sybil = {"split_owner": 0, "producers": [producer(0, 0, owner=0, revenue=30), producer(1, 0, owner=0, revenue=12),
                                             producer(2, 0, owner=1, revenue=99)]}  # fmt: skip
    assert split_owner_revenue(sybil) == 42


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "out"
    params = [f"--param={p}" for p in SMALL]
    run = run_cli("study", "--seeds", "2", "--rules", "equal,knn_shapley", "--workers", "2", "--out", str(out),
                  *params, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "copying" in run.stdout and "Sybil" in run.stdout
    return out


def test_study_answers_from_the_runs_files(study: Path) -> None:
    data = json.loads((study / "study.json").read_text())
    assert data["rules"] == ["equal", "knn_shapley"] and data["seeds"] == [7, 8] and data["reference"] == "equal"
    measures = {m["measure"]: m for m in data["measures"]}
    # each figure is the mean of what the runs' own files say, seed by seed
    files = sorted((study / "noisy-producers").glob("point-01-*/seed-*/metrics.json"))
    runs = [json.loads(path.read_text()) for path in files]
    assert len(runs) == 2
    distance = measures["truth_distance"]["by_rule"]["equal"]
    assert distance["mean"] == pytest.approx(sum(r["truth_distance"] for r in runs) / 2)
    assert distance["n"] == 2
    profit = measures["builder_profit"]["by_rule"]["equal"]["mean"]
    assert profit == pytest.approx(sum(r["builder_profit"]["total"] for r in runs) / 2 / 1_000_000)
    # copying under equal shares pays the copier what the original gets, and nothing with provenance
    assert measures["copier_ratio"]["by_rule"]["equal"]["mean"] == pytest.approx(1.0, abs=1e-3)
    assert measures["copier_ratio_provenance"]["by_rule"]["knn_shapley"]["mean"] < 0.5
    # splitting into 3 identities pays with flat licenses, hardly at all with per-row ones
    flat = measures["sybil_gain_flat"]["by_rule"]["knn_shapley"]["mean"]
    per_row = measures["sybil_gain_per_row"]["by_rule"]["knn_shapley"]["mean"]
    assert flat > 1.5 and abs(per_row - 1) < 0.1, (flat, per_row)
    # each rule's paired difference with the reference is there, with its interval or its reason
    for measure in data["measures"]:
        assert set(measure["vs_reference"]) == {"knn_shapley"}
    rows = list(csv.DictReader((study / "study.csv").open()))
    pairs = {(r["measure"], r["rule"]) for r in rows}
    assert pairs >= {("truth_distance", "equal"), ("sybil_gain_flat", "knn_shapley")}
    text = (study / "study.md").read_text()
    assert "vs equal" in text and "[" in text


def test_study_figure_prints(study: Path) -> None:
    assert_png(study / "study.png")
    with Image.open(study / "study.png") as image:
        assert min(image.info["dpi"]) >= 199
    ElementTree.parse(study / "study.svg")  # well-formed SVG
    assert (study / "study.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--rules", "equal,made_up"], "unknown royalty rule 'made_up'"), (["--rules", ","], "at least one royalty rule"),
     (["--param", "rounds=0"], "rounds: 0 is out of range"), (["--seeds", "1"], "at least 2 seeds")],
)  # fmt: skip
def test_study_refuses_bad_input_before_running(args: list[str], fragment: str, tmp_path: Path) -> None:
    run = run_cli("study", "--seeds", "2", *args, "--out", str(tmp_path / "out"))
    assert_one_line_error(run, fragment)
    assert "runs (grid points" not in run.stdout + run.stderr  # refused before the progress bar
    assert not (tmp_path / "out").exists()


def test_a_study_is_read_again_from_its_files_to_the_same_answer(study: Path) -> None:
    before = (study / "study.json").read_bytes()
    (study / "study.json").unlink()
    measures = read_study(study, ["equal", "knn_shapley"], [7, 8])
    assert (study / "study.json").read_bytes() == before
    assert {m.name for m in measures} >= {"truth_distance", "copier_ratio_provenance", "sybil_gain_per_row"}
