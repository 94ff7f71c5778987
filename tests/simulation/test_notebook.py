"""The researcher's notebook runs: a tiny seeded sweep made by the documented ``agentmarket sweep ... --seeds N``
command, then ``examples/compare_rules.ipynb`` executed against it on a local kernel (nbclient, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.helpers.cli import run_cli
from tests.helpers.simulation import TINY, assert_png

NOTEBOOK = Path(__file__).parents[2] / "examples" / "compare_rules.ipynb"


def test_the_notebook_redraws_the_comparison_from_a_sweep(tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "rules"
    params = [f"--param={p}" for p in [*TINY, "engine=fast"]]
    made = run_cli("sweep", "baseline", *params, "--param", "royalty.rule=equal,knn_shapley", "--seeds", "2",
                   "--workers", "2", "--out", str(sweep), timeout=600)  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["kind"] == "sweep over seeds" and manifest["argv"][:2] == ["agentmarket", "sweep"]
    assert "--seeds" in manifest["argv"] and (sweep / "scenario.toml").exists()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("AGENTMARKET_SWEEP", str(sweep))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    assert_png(sweep / "compare_rules.png")
    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    with (sweep / "sweep.csv").open(newline="") as handle:
        points = list(csv.DictReader(handle))
    assert [p["royalty.rule"] for p in points] == ["equal", "knn_shapley"]
    for point in points:
        assert f"Gini {float(point['gini_producer_revenue_mean']):.3f}" in printed
    assert "interval bounds recomputed from seeds.csv: all equal sweep.csv's" in printed
    assert "knn_shapley: license" in printed and "royalty release" in printed
