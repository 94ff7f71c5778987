"""The fast engine agrees with the full stack on anvil: every shipped scenario, the same economic results to the
unit under both engines (see ``test_fast_engine.py`` for the embedded chain and what may differ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulation.scenario import packaged_scenarios
from tests.helpers.simulation import assert_engines_agree


@pytest.mark.parametrize("name", packaged_scenarios())
def test_fast_and_full_engines_agree_on_anvil(name: str, tmp_path: Path) -> None:
    assert_engines_agree(name, "anvil", tmp_path)
