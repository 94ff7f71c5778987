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
from simulation.study import copier_ratio, noisy_royalty_share, split_owner_revenue
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
    result = {"producers": [producer(0, 600), producer(1, 300, noise=0.4), producer(2, 100, noise=0.6)]}
    assert noisy_royalty_share(result) == pytest.approx(0.4)
    copying = {"producers": [producer(0, 500), producer(1, 200), producer(2, 250, copy_of=0),
                             producer(3, 0, copy_of=1)]}  # fmt: skip
    assert copier_ratio(copying) == pytest.approx(250 / 700)
    nothing = {"producers": [producer(0, 0), producer(1, 0, copy_of=0)]}
    assert isinstance(copier_ratio(nothing), Undefined)
    assert isinstance(noisy_royalty_share(nothing), Undefined)
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
    assert "copying" in run.stdout and "sybil" in run.stdout
    return out


def test_study_answers_from_the_runs_files(study: Path) -> None:
    data = json.loads((study / "study.json").read_text())
    assert data["rules"] == ["equal", "knn_shapley"] and data["seeds"] == [7, 8] and data["reference"] == "equal"
    measures = {(m["question"], m["measure"]): m for m in data["measures"]}
    # equal shares: the noisy producers' royalty is their count over the parents' (every shard bought)
    files = sorted((study / "noisy-producers").glob("point-01-*/seed-*/result.json"))
    results = [json.loads(path.read_text()) for path in files]
    assert len(results) == 2
    by_hand = [noisy_royalty_share(r) for r in results]
    equal = measures[("noisy", "noisy_royalty_share")]["by_rule"]["equal"]
    assert equal["mean"] == pytest.approx(sum(by_hand) / 2)
    assert 0.35 < equal["mean"] < 0.45  # 2 of 5 equal shares, less the floor rounding
    # copying under equal shares pays the copier exactly what the original gets
    assert measures[("copying", "copier_ratio")]["by_rule"]["equal"]["mean"] == pytest.approx(1.0, abs=1e-3)
    # splitting into 3 identities at the full license price pays under equal shares
    assert measures[("sybil", "sybil_gain")]["by_rule"]["equal"]["mean"] > 1.5
    # each rule's paired difference with the reference is there, with its interval or its reason
    for measure in data["measures"]:
        assert set(measure["vs_reference"]) == {"knn_shapley"}
    rows = list(csv.DictReader((study / "study.csv").open()))
    assert {(r["question"], r["rule"]) for r in rows} >= {("noisy", "equal"), ("sybil", "knn_shapley")}
    text = (study / "study.md").read_text()
    assert "vs equal" in text and "[" in text


def test_study_figure_prints(study: Path) -> None:
    assert_png(study / "study.png")
    with Image.open(study / "study.png") as image:
        assert min(image.info["dpi"]) >= 199
    ElementTree.parse(study / "study.svg")  # well-formed SVG
    assert (study / "study.pdf").read_bytes()[:5] == b"%PDF-"


def test_study_refuses_an_unknown_rule_before_running(tmp_path: Path) -> None:
    run = run_cli("study", "--seeds", "2", "--rules", "equal,made_up", "--out", str(tmp_path / "out"))
    assert_one_line_error(run, "made_up")
    assert not (tmp_path / "out" / "noisy-producers").exists()
