"""Bring your own data: a scenario's ``[data]`` names a CSV file (features and a label column) instead of a
bundled set; a bad file is a one-line error naming the file, line and column. A seeded synthetic source of any
size keeps large scenarios' queries from repeating held-out rows, and the manifest says how many repeat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification

from agents.errors import BadDataset
from agents.learning import load_csv, load_source
from simulation.manifest import data_summary
from simulation.runner import simulate
from simulation.scenario import ScenarioError, load_scenario
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.simulation import TINY

BASELINE = Path(__file__).parents[2] / "scenarios" / "baseline.toml"
NAMES = ("setosa", "versicolor", "virginica")


def write_rows(path: Path, rows: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of ``rows`` rows: 6 features and a text label column ``species`` in the middle."""
    X, y = make_classification(n_samples=rows, n_features=6, n_informative=4, n_classes=3, random_state=seed)
    lines = ["a,b,c,species,d,e,f"]
    lines += [
        ",".join([*map(repr, x[:3].tolist()), NAMES[k], *map(repr, x[3:].tolist())]) for x, k in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return X, y


def scenario_file(folder: Path, data: str) -> Path:
    text = BASELINE.read_text()
    start, end = text.index("[data]"), text.index("[protocol]")
    path = folder / "mine.toml"
    path.write_text(text[:start] + "[data]\n" + data + "\n\n" + text[end:])
    return path


def test_a_csv_file_reads_back_exactly_with_text_labels_as_classes(tmp_path: Path) -> None:
    X, y = write_rows(tmp_path / "rows.csv")
    features, labels = load_csv(tmp_path / "rows.csv", "species")
    assert np.array_equal(features, X) and np.array_equal(labels, y)  # sorted names: setosa 0, versicolor 1, …
    (tmp_path / "numbers.csv").write_text("x,label\n1,10\n2,9\n\n3,10\n4,-1\n")
    features, labels = load_csv(tmp_path / "numbers.csv", "label")
    assert features.tolist() == [[1], [2], [3], [4]] and labels.tolist() == [2, 1, 2, 0]  # -1 < 9 < 10


@pytest.mark.parametrize(
    ("content", "label", "message"),
    [
        ("x,y\n1,0\n2,1\n", "species", "line 1: no label column 'species' in the header (columns: x, y)"),
        ("x,label\n1,0\n2,1\nabc,0\n", "label", "line 4, column 'x': 'abc' is not a number"),
        ("x,label\n1,0\nnan,1\n", "label", "line 3, column 'x': 'nan' is not a finite number"),
        ("x,label\n1,0\n2\n", "label", "line 3: expected 2 fields, got 1"),
        (
            "x,label\n1,0\n2,0\n",
            "label",
            "needs at least 2 rows and 2 classes, got 2 rows and 1 class(es) in column 'label'",
        ),
        ("label\n0\n1\n", "label", "line 1: needs at least one feature column besides 'label'"),
    ],
)
def test_a_bad_csv_file_is_refused_naming_the_line(tmp_path: Path, content: str, label: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(BadDataset) as caught:
        load_csv(tmp_path / "bad.csv", label)
    assert str(caught.value) == f"data file {tmp_path / 'bad.csv'}, {message}".replace(", needs", ": needs")


def test_a_scenario_names_its_csv_relative_to_itself_and_runs_on_it(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.csv")
    path = scenario_file(tmp_path, 'source = "csv"\npath = "rows.csv"\nlabel = "species"\ntest_fraction = 0.3')
    scenario = load_scenario(path, [*TINY, "engine=fast"])
    assert scenario.data.path == str(tmp_path / "rows.csv")
    summary = simulate(scenario, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [p["rows"] for p in result["producers"]] == [80, 80, 80] and summary.answered == 16
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"] == {"source": "csv", "path": str(tmp_path / "rows.csv"), "label": "species", "rows": 400,
                                "train_rows": 280, "query_rows": 60, "queries": 16, "repeated_queries": 0}  # fmt: skip
    # the scenario as run names the file absolutely: its manifest's command works from the run's folder
    assert load_scenario(tmp_path / "run" / "scenario.toml").data.path == str(tmp_path / "rows.csv")


def test_a_missing_file_or_column_is_a_one_line_error_of_the_cli(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, 'source = "csv"\npath = "nowhere.csv"\nlabel = "species"')
    assert_one_line_error(run_cli("simulate", str(path), "--out", str(tmp_path / "out")), "data.path",
                          f"data file {tmp_path / 'nowhere.csv'}: No such file or directory")  # fmt: skip
    (tmp_path / "nowhere.csv").write_text("x,kind\n1,a\n2,b\n3,a\nfour,b\n")
    with pytest.raises(ScenarioError, match="line 1: no label column 'species'"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"line 5, column 'x': 'four' is not a number"):
        load_scenario(path, ["data.label=kind"])
    with pytest.raises(ScenarioError, match=r'data\.path: data\.source = "csv" needs data\.path'):
        load_scenario(BASELINE, ['data.source="csv"'])
    with pytest.raises(ScenarioError, match=r'only data\.source = "csv" reads a file'):
        load_scenario(BASELINE, [f'data.path="{tmp_path / "nowhere.csv"}"'])


def test_the_synthetic_source_grows_so_queries_need_not_repeat() -> None:
    """Digits has 270 query rows: the large scenario's 100,000 queries repeat them; a synthetic source of
    600,000 rows has 90,000 query rows, enough for 100,000 queries but 10,000."""
    large = load_scenario("large")
    assert data_summary(large)["repeated_queries"] == 100_000 - 270
    bigger = load_scenario("large", ['data.source="make_classification"', "data.rows=600000"])
    summary = data_summary(bigger)
    assert summary["rows"] == 600_000 and summary["query_rows"] == 90_000 and summary["repeated_queries"] == 10_000
    X, y = load_source("make_classification", seed=3, rows=2_000)
    assert X.shape == (2_000, 20) and len(np.unique(X, axis=0)) == 2_000 and set(y.tolist()) == {0, 1, 2}
    with pytest.raises(ScenarioError, match=r"data\.rows: 10 is out of range"):
        load_scenario(BASELINE, ["data.rows=10"])
