"""Scenario files: the shipped scenarios load, overrides and sweep grids apply, and every kind of bad input
raises ``ScenarioError`` naming the file, the dotted key and what is allowed."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from marketplace.errors import AgentmarketError
from simulation.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    packaged_scenarios,
    parse_sweep,
    sweep_scenarios,
    train_rows,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BASELINE = SCENARIOS / "baseline.toml"


@pytest.fixture(scope="module")
def baseline() -> Scenario:
    """The shipped baseline scenario."""
    return load_scenario(BASELINE)


def error_for(overrides: list[str], path: Path = BASELINE) -> str:
    """The ScenarioError message for loading ``path`` with ``overrides``."""
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, overrides)
    return str(caught.value)


# --------------------------------------------------------------------------------------------------
# The shipped scenarios


def test_baseline_has_clean_producers_and_amounts_in_base_units(baseline: Scenario) -> None:
    assert baseline.name == "baseline"
    assert baseline.producers.count == 4
    assert baseline.producers.label_noise == [0.0] * 4  # one number in the file, one value per producer here
    assert baseline.producers.shard_size == [150] * 4
    assert baseline.producers.duplicates == []
    assert baseline.producers.price_units == 2_000_000
    assert baseline.builders.budget_units == 20_000_000
    assert baseline.builders.price_per_call_units == 20_000
    assert baseline.consumers.budget_units == 5_000_000
    assert baseline.consumers.value_per_correct_units == 100_000
    assert [baseline.builders.model_for(i) for i in range(3)] == ["knn", "logreg", "knn"]
    assert baseline.royalty.rule == "knn_shapley"
    assert baseline.protocol.fee_bps == 100


def test_noisy_producers_sell_label_noised_shards() -> None:
    scenario = load_scenario(SCENARIOS / "noisy-producers.toml")
    noisy = [rate for rate in scenario.producers.label_noise if rate > 0]
    assert len(noisy) == 2 and all(0.4 <= rate <= 0.6 for rate in noisy)
    assert len(scenario.producers.label_noise) == scenario.producers.count == 5


def test_free_riders_resell_duplicates_of_original_producers() -> None:
    scenario = load_scenario(SCENARIOS / "free-riders.toml")
    producers = scenario.producers
    copiers = {i: producers.duplicate_of(i) for i in range(producers.count) if producers.duplicate_of(i) is not None}
    assert copiers == {3: 0, 4: 1}
    assert producers.duplicate_rate(3) == 0.8 and producers.duplicate_rate(0) == 0.0
    assert set(copiers.values()).isdisjoint(copiers)  # sources are original producers


@pytest.mark.parametrize("name", ["baseline", "noisy-producers", "free-riders", "sybil", "poisoning"])
def test_shipped_scenarios_are_small_and_fit_their_data(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    assert scenario.name == name
    assert sum(scenario.producers.shard_size) <= train_rows(scenario.data.source, scenario.data.test_fraction)
    assert scenario.producers.count <= 5 and scenario.builders.count == 2 and scenario.consumers.count == 3
    assert scenario.rounds * scenario.consumers.queries_per_round <= 50


# --------------------------------------------------------------------------------------------------
# Overrides and sweeps


def test_overrides_and_seed_are_applied_and_validated(baseline: Scenario) -> None:
    scenario = load_scenario(BASELINE, ["royalty.rule=equal", "producers.count=6", "builders.price_per_call=0.05"], 99)
    assert scenario.royalty.rule == "equal"
    assert scenario.producers.count == 6 and scenario.producers.shard_size == [150] * 6  # scalar re-broadcast
    assert scenario.builders.price_per_call_units == 50_000
    assert scenario.seed == 99
    assert baseline.royalty.rule == "knn_shapley"  # the loaded scenario is untouched


def test_with_overrides_returns_a_new_validated_scenario(baseline: Scenario) -> None:
    changed = baseline.with_overrides({"producers.count": "3", "producers.label_noise": "[0, 0.5, 0]"})
    assert changed.producers.count == 3 and changed.producers.label_noise == [0.0, 0.5, 0.0]
    assert baseline.producers.count == 4
    with pytest.raises(ScenarioError, match=r"baseline\.toml: consumers\.brain: unknown brain 'smart'; allowed: "):
        baseline.with_overrides({"consumers.brain": "smart"})


def test_scenarios_survive_pickling_for_worker_processes(baseline: Scenario) -> None:
    copy = pickle.loads(pickle.dumps(baseline))
    assert copy == baseline
    assert copy.with_overrides({"producers.count": "5"}).producers.shard_size == [150] * 5


def test_parse_sweep_builds_the_cartesian_grid_in_stable_order() -> None:
    grid = parse_sweep(["royalty.rule=none,equal,knn_shapley", "producers.count=3,5"])
    assert grid == [
        {"royalty.rule": rule, "producers.count": count}
        for rule in ("none", "equal", "knn_shapley")
        for count in ("3", "5")
    ]
    assert parse_sweep(["producers.label_noise=[0, 0.5, 0, 0], [0,0,0,0]"]) == [
        {"producers.label_noise": "[0, 0.5, 0, 0]"},
        {"producers.label_noise": "[0,0,0,0]"},
    ]
    assert parse_sweep([]) == [{}]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["royalty.rule"], "must look like key.path=value1,value2"),
        (["royalty.rule=none", "royalty.rule=equal"], "royalty.rule is given twice"),
        (["royalty.rule=none,,equal"], "needs non-empty values"),
    ],
)
def test_parse_sweep_rejects_malformed_parameters(params: list[str], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_sweep(params)


def test_sweep_scenarios_validates_every_grid_point_up_front(baseline: Scenario) -> None:
    points = sweep_scenarios(baseline, ["royalty.rule=none,equal", "producers.count=3,5"])
    assert [(p.royalty.rule, p.producers.count) for _, p in points] == [
        ("none", 3),
        ("none", 5),
        ("equal", 3),
        ("equal", 5),
    ]
    with pytest.raises(ScenarioError, match="unknown royalty rule 'shapley'"):
        sweep_scenarios(baseline, ["royalty.rule=none,shapley"])


# --------------------------------------------------------------------------------------------------
# Errors


def test_scenario_errors_are_agentmarket_errors() -> None:
    assert issubclass(ScenarioError, AgentmarketError)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("royalty.rul=equal", "unknown key 'royalty.rul'; allowed keys in [royalty]: rule"),
        (
            "colour=red",
            "unknown key 'colour'; allowed keys at the top level: name, seed, rounds, engine, data, protocol,",
        ),
        (
            "producers.duplicates=[{producer = 1, source = 0, ratio = 0.5}]",
            "unknown key 'producers.duplicates[0].ratio'; allowed keys in [producers.duplicates[0]]: "
            "producer, source, rate",
        ),
    ],
)
def test_unknown_keys_list_the_allowed_keys(override: str, expected: str) -> None:
    message = error_for([override])
    assert message.startswith(f"{BASELINE}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.source=mnist", "data.source: unknown data source 'mnist'; allowed: digits, breast_cancer, wine, iris,"),
        ("royalty.rule=shapley", "royalty.rule: unknown royalty rule 'shapley'; allowed: none, equal, proportional,"),
        ("consumers.brain=smart", "consumers.brain: unknown brain 'smart'; allowed: greedy, bandit, ucb,"),
        ("builders.models=['knn', 'svm']", "builders.models[1]: unknown model 'svm'; allowed: knn, logreg"),
    ],
)
def test_bad_enum_values_list_the_allowed_values(override: str, expected: str) -> None:
    assert expected in error_for([override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("producers.count=0", "producers.count: 0 is out of range; must be between 1 and 200"),
        ("protocol.fee_bps=20000", "protocol.fee_bps: 20000 is out of range; must be between 0 and 10000"),
        ("producers.label_noise=[0, 0, 1.5, 0]", "producers.label_noise[2]: 1.5 is out of range; must be between 0.0"),
        ("data.test_fraction=1", "data.test_fraction: 1.0 is out of range; must be between 0.05 and 0.95"),
        ("seed=-1", "seed: -1 is out of range; must be between 0 and"),
    ],
)
def test_numbers_out_of_range_state_the_range(override: str, expected: str) -> None:
    assert expected in error_for([override])


def test_per_producer_lists_must_match_the_producer_count() -> None:
    message = error_for(["producers.label_noise=[0, 0.5]"])
    assert "producers.label_noise: has 2 entries but producers.count is 4" in message
    assert "one value per producer or a single number for all" in message
    # a list written in the file does not follow a changed count
    noisy = SCENARIOS / "noisy-producers.toml"
    assert "producers.label_noise: has 5 entries but producers.count is 6" in error_for(["producers.count=6"], noisy)


def test_shards_larger_than_the_data_set_are_refused() -> None:
    message = error_for(["data.source=wine"])
    assert "producers.shard_size: the shards need 600 rows in total but data source 'wine' has only 124" in message
    assert "(178 rows minus 54 held out" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("producers.duplicates=[{producer = 7, source = 0}]", "producers.duplicates[0].producer: 7 is not a producer"),
        ("producers.duplicates=[{producer = 2, source = 2}]", "cannot duplicate its own rows"),
        (
            "producers.duplicates=[{producer = 2, source = 0}, {producer = 3, source = 2}]",
            "producers.duplicates[1].source: producer 2 resells duplicates itself",
        ),
    ],
)
def test_duplicates_must_name_distinct_original_producers(override: str, expected: str) -> None:
    assert expected in error_for([override])


@pytest.mark.parametrize("amount", ["-1", "1.0000001", "'lots'", "inf"])
def test_bad_amounts_say_what_an_amount_is(amount: str) -> None:
    assert "producers.price: must be a tUSD amount >= 0 with at most 6 decimals" in error_for(
        [f"producers.price={amount}"]
    )


def test_wrong_types_and_sections_name_the_key() -> None:
    assert "producers.count: input should be a valid integer, got 'four'" in error_for(["producers.count=four"])
    assert "producers must be a table ([producers] section)" in error_for(["producers=3"])


def test_errors_from_overrides_name_the_override_and_several_problems_are_counted() -> None:
    message = error_for(["royalty.rule=shapley", "consumers.count=0"])
    assert ": 2 problems: " in message
    assert "(set by override royalty.rule='shapley')" in message
    assert "(set by override consumers.count=0)" in message


def test_malformed_overrides_are_refused() -> None:
    with pytest.raises(ScenarioError, match=r"must look like key\.path=value"):
        load_scenario(BASELINE, ["royalty.rule"])
    with pytest.raises(ScenarioError, match=r"cannot set royalty\.rule\.x: royalty\.rule is not a table"):
        load_scenario(BASELINE, ["royalty.rule.x=1"])


def test_problems_in_the_file_itself_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[producers]\ncount = 2\nprice = "1"\ncolour = "red"\n')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: unknown key 'producers.colour'; allowed keys in [producers]: count,")
    path.write_text("[producers]\ncount = 2\n")
    with pytest.raises(ScenarioError, match=r"mine\.toml: name is required"):
        load_scenario(path)
    path.write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"mine\.toml: not valid TOML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"scenario file .*missing\.toml not found"):
        load_scenario(tmp_path / "missing.toml")


def test_a_minimal_file_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text('name = "tiny"\n[producers]\ncount = 2\n')
    scenario = load_scenario(path)
    assert scenario.producers.shard_size == [150, 150] and scenario.producers.label_noise == [0.0, 0.0]
    assert scenario.builders.models == ["knn", "logreg"] and scenario.royalty.rule == "knn_shapley"


# --------------------------------------------------------------------------------------------------
# Packaged scenarios by name


def test_a_bare_name_is_the_packaged_scenario_from_any_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert packaged_scenarios() == ["baseline", "free-riders", "large", "noisy-producers", "poisoning", "sybil"]
    for name in ("baseline", "baseline.toml"):
        assert load_scenario(name).model_dump() == load_scenario(BASELINE).model_dump()
    (tmp_path / "baseline.toml").write_text(BASELINE.read_text().replace("rounds = 5", "rounds = 2"))
    assert load_scenario("baseline.toml").rounds == 2  # a file in the working directory comes first
    assert load_scenario("baseline").rounds == 5
    with pytest.raises(ScenarioError, match=r"'nosuch' is neither a file nor a packaged scenario \(baseline, "):
        load_scenario("nosuch")
    with pytest.raises(ScenarioError, match=r"scenario file sub/baseline\.toml not found"):
        load_scenario("sub/baseline.toml")  # a path is a path: no fallback
