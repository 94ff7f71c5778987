"""Data shards and models: loaders, seeded splits and defects, exact CSV round trip, training, serving."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from agents.errors import AgentError, BadDataset
from agents.learning import (
    SOURCES,
    Shard,
    accuracy,
    decode_shard,
    digits_classifier,
    encode_shard,
    load_source,
    make_shards,
    predictor,
    split_holdout,
    train_model,
    with_duplicates,
    with_label_noise,
)
from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.inference import InferenceError, ModelInputError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits dataset (1797 rows, 64 features, 10 classes)."""
    return load_source("digits")


def identified_shard(rows: int, features: int = 3, n_classes: int = 4, seed: int = 0) -> Shard:
    """A shard whose first feature is the row number, so rows can be traced after shuffling."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(rows, dtype=float), rng.normal(size=(rows, features - 1))])
    return Shard(X, rng.integers(0, n_classes, size=rows))


# ---------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_loads_as_float_features_and_int_labels(name: str) -> None:
    X, y = load_source(name)
    assert X.dtype == np.float64 and X.ndim == 2
    assert y.dtype == np.int64 and y.shape == (len(X),)
    assert len(np.unique(y)) >= 2


def test_synthetic_source_is_seeded() -> None:
    X0, y0 = load_source("make_classification", seed=3)
    X1, y1 = load_source("make_classification", seed=3)
    X2, _ = load_source("make_classification", seed=4)
    assert X0.shape == (1500, 20) and set(y0.tolist()) == {0, 1, 2}
    assert np.array_equal(X0, X1) and np.array_equal(y0, y1)
    assert not np.array_equal(X0, X2)


def test_unknown_source_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="mnist") as raised:
        load_source("mnist")
    for name in SOURCES:
        assert name in str(raised.value)


def test_split_holdout_is_stratified_seeded_and_complete(digits) -> None:
    X, y = digits
    X_train, y_train, X_test, y_test = split_holdout(X, y, 0.25, seed=1)
    assert len(y_train) + len(y_test) == len(y) and X_train.shape[1] == X.shape[1]
    assert abs(len(y_test) - 0.25 * len(y)) <= 1
    overall = np.bincount(y) / len(y)
    assert np.abs(np.bincount(y_test, minlength=10) / len(y_test) - overall).max() < 0.01
    again = split_holdout(X, y, 0.25, seed=1)
    assert np.array_equal(again[3], y_test) and np.array_equal(again[2], X_test)
    assert not np.array_equal(split_holdout(X, y, 0.25, seed=2)[2], X_test)


def test_make_shards_are_disjoint_seeded_and_sized() -> None:
    source = identified_shard(100)
    shards = make_shards(source.X, source.y, [10, 30, 60], seed=5)
    assert [shard.rows for shard in shards] == [10, 30, 60]
    row_ids = np.concatenate([shard.X[:, 0] for shard in shards]).astype(int)
    assert sorted(row_ids.tolist()) == list(range(100))
    for shard in shards:  # each row keeps its own label
        assert np.array_equal(shard.y, source.y[shard.X[:, 0].astype(int)])
    assert np.array_equal(make_shards(source.X, source.y, [10], seed=5)[0].X, shards[0].X)
    with pytest.raises(ValueError, match="101 rows"):
        make_shards(source.X, source.y, [50, 51], seed=0)


def test_shard_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="2 labels"):
        Shard(np.zeros((3, 2)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="2-D"):
        Shard(np.zeros(3), np.zeros(3, dtype=np.int64))
    assert Shard(np.zeros((3, 2)), np.array([0, 1, 2])).rows == 3


# ---------------------------------------------------------------------------------------------- defects


@pytest.mark.parametrize("rate", [0.0, 0.13, 0.4, 1.0])
def test_label_noise_flips_exactly_the_requested_count_to_other_classes(rate: float) -> None:
    shard = identified_shard(77, n_classes=4)
    before = shard.y.copy()
    noisy = with_label_noise(shard, rate, n_classes=4, rng=np.random.default_rng(9))
    assert int((noisy.y != shard.y).sum()) == round(rate * 77)
    assert noisy.y.min() >= 0 and noisy.y.max() < 4
    assert np.array_equal(noisy.X, shard.X)
    assert np.array_equal(shard.y, before)  # pure: the input is untouched
    assert np.array_equal(with_label_noise(shard, rate, 4, rng=9).y, with_label_noise(shard, rate, 4, rng=9).y)


def test_label_noise_reaches_every_other_class() -> None:
    shard = Shard(np.zeros((3000, 1)), np.zeros(3000, dtype=np.int64))
    noisy = with_label_noise(shard, 1.0, n_classes=4, rng=0)
    counts = np.bincount(noisy.y, minlength=4)
    assert counts[0] == 0 and counts[1:].min() > 900  # ~1000 each: uniform over the other classes


def test_duplicates_replace_rows_with_copies_of_the_source() -> None:
    shard, source = identified_shard(50, seed=1), identified_shard(40, seed=2)
    source = Shard(source.X + 1000, source.y)  # source rows are recognisable: first feature ≥ 1000
    original = shard.X.copy()
    resold = with_duplicates(shard, source, 0.3, rng=np.random.default_rng(4))
    copied = resold.X[:, 0] >= 1000
    assert int(copied.sum()) == 15
    source_rows = {(tuple(x), label) for x, label in zip(source.X.tolist(), source.y.tolist(), strict=True)}
    for features, label in zip(resold.X[copied].tolist(), resold.y[copied].tolist(), strict=True):
        assert (tuple(features), label) in source_rows
    kept = ~copied
    assert np.array_equal(resold.X[kept], shard.X[kept]) and np.array_equal(resold.y[kept], shard.y[kept])
    assert len(set(resold.X[copied, 0].tolist())) == 15  # drawn without replacement
    assert np.array_equal(shard.X, original)
    with pytest.raises(ValueError, match="features"):
        with_duplicates(shard, Shard(np.zeros((5, 2)), np.zeros(5, dtype=np.int64)), 0.1, rng=0)


# ---------------------------------------------------------------------------------------------- CSV


def test_encode_decode_round_trip_is_exact() -> None:
    awkward = [0.1, 1 / 3, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, -123456789.123456789, 2.0**53 + 1]
    rng = np.random.default_rng(0)
    X = np.vstack([np.array(awkward).reshape(2, 4), rng.normal(size=(30, 4)) * 10.0 ** rng.integers(-8, 8, (30, 4))])
    shard = Shard(X, rng.integers(-3, 1000, size=32))
    data = encode_shard(shard)
    assert data.splitlines()[0] == b"f0,f1,f2,f3,label"
    decoded = decode_shard(data)
    assert decoded.X.tobytes() == shard.X.tobytes()  # bit for bit, sign of zero included
    assert np.array_equal(decoded.y, shard.y) and decoded.y.dtype == np.int64
    assert encode_shard(decoded) == data


def test_round_trip_of_real_data_and_of_no_rows(digits) -> None:
    X, y = digits
    shard = Shard(X[:200] / 7.0, y[:200])
    assert decode_shard(encode_shard(shard)).X.tobytes() == shard.X.tobytes()
    empty = decode_shard(encode_shard(Shard(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))))
    assert empty.rows == 0 and empty.X.shape == (0, 3)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"a,b,label\n1,2,0\n", "line 1: header"),
        (b"f0,f2,label\n", "line 1: header"),
        (b"label\n", "line 1: header"),
        (b"f0,f1,label\n1.0,2.0,1\n1.0,2.0\n", "line 3: expected 3 fields, got 2"),
        (b"f0,f1,label\n1.0,x,1\n", "line 2, column f1: 'x' is not a number"),
        (b"f0,f1,label\n1.0,2.0,1\n\n", "line 3: expected 3 fields, got 0"),
        (b"f0,f1,label\n1.0,2.0,1.5\n", "line 2, column label: '1.5' is not an integer"),
        (b"f0,f1,label\n1.0,nan,1\n", "line 2, column f1: 'nan' is not a finite number"),
        (b"f0,f1,label\n1.0,2.0,99999999999999999999\n", "line 2, column label"),
        (b"f0,f1,label\n\xff,2,1\n", "not UTF-8"),
        (b'f0,f1,label\n1.0,"2.0\n', "line 2"),
    ],
)
def test_decode_errors_name_the_line_and_problem(content: bytes, expected: str) -> None:
    with pytest.raises(BadDataset, match=expected.replace("(", r"\(")) as raised:
        decode_shard(content)
    assert isinstance(raised.value, AgentError)


# ---------------------------------------------------------------------------------------------- models


def test_trained_models_are_accurate_and_logreg_converges_quietly(digits) -> None:
    X_train, y_train, X_test, y_test = split_holdout(*digits, 0.3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        logreg = train_model("logreg", X_train, y_train, seed=0)
    assert isinstance(logreg, Pipeline)
    knn = train_model("knn", X_train, y_train, k=3)
    assert knn.n_neighbors == 3
    assert accuracy(logreg, X_test, y_test) > 0.93 and accuracy(knn, X_test, y_test) > 0.95


def test_model_edge_cases() -> None:
    tiny = identified_shard(2)
    assert train_model("knn", tiny.X, tiny.y, k=5).n_neighbors == 2
    single = Shard(np.random.default_rng(0).normal(size=(6, 2)), np.full(6, 3))
    constant = train_model("logreg", single.X, single.y)
    assert accuracy(constant, single.X, single.y) == 1.0
    assert accuracy(constant, np.zeros((2, 2)), np.array([3, 1])) == 0.5
    with pytest.raises(ValueError, match="knn, logreg"):
        train_model("forest", tiny.X, tiny.y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero rows"):
        train_model("knn", np.zeros((0, 2)), np.zeros(0))


def test_predictor_serves_the_model(digits) -> None:
    X, y = digits
    model = train_model("knn", X[:500], y[:500])
    serve = predictor(model)
    batch = X[500:520]
    answer = serve({"features": batch.tolist()})
    assert answer == {"labels": model.predict(batch).tolist()}
    assert json.loads(json.dumps(answer)) == answer
    assert serve(batch[0].tolist()) == {"labels": [int(model.predict(batch[:1])[0])]}
    assert serve([int(v) for v in batch[0]]) == serve(batch[0].tolist())  # integers are numbers too


@pytest.fixture(scope="module")
def three_feature_server():
    """An inference handler serving a logistic regression on three features."""
    shard = identified_shard(20)
    return predictor(train_model("logreg", shard.X, shard.y))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"features": [[1.0, 2.0]]}, "row 0 has 2 features; the model expects 3"),
        ([1.0, 2.0, 3.0, 4.0], "row 0 has 4 features"),
        ({"features": [[1.0, 2.0, 3.0], [1.0]]}, "row 1 has 1 features"),
        ([1.0, "2", 3.0], "row 0, feature 1: '2' is not a finite number"),
        ([1.0, True, 3.0], "feature 1: True"),
        ([1.0, float("nan"), 3.0], "feature 1: nan"),
        ([1.0, 10**400, 3.0], "feature 1"),
        ({"features": []}, "no rows"),
        ([], "row 0 has 0 features"),
        ({"rows": [[1.0, 2.0, 3.0]]}, "got keys \\['rows'\\]"),
        ("1,2,3", "got str"),
        (None, "got NoneType"),
        ({"features": [[1.0, 2.0, 3.0], 4.0]}, "row 1 is a float"),
    ],
)
def test_predictor_rejects_bad_input(three_feature_server, payload, expected: str) -> None:
    with pytest.raises(ModelInputError, match=expected) as refused:
        three_feature_server(payload)
    assert not isinstance(refused.value, InferenceError)  # the caller's mistake (422), not a failing model (502)


def test_the_served_digits_classifier_answers_422_to_input_it_cannot_take(chain, deployment, market, alice, bob,
                                                                          tmp_path):  # fmt: skip
    """Over HTTP, paid by a channel: a row of the wrong length (or any other input the model cannot take) is the
    caller's mistake, 422 ``bad_model_input`` naming it, and costs nothing; a good row is answered and debited."""
    price = to_units("0.01")
    model = market.marketplace.publish(bob, kind=AssetKind.MODEL, content_hash=b"\x0d" * 32, uri="digits-knn",
                                       price=price, token=market.token.address,
                                       payees=[(bob.address, 10_000)])  # fmt: skip
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    with TestClient(create_app(settings, chain=chain, model_handlers={model: digits_classifier})) as server:
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = client.open_channel(model, to_units(1))
        for bad, says in (([0.0] * 63, "row 0 has 63 features; the model expects 64"),
                          ({"features": [[0.0] * 64, [1.0] * 65]}, "row 1 has 65 features"),
                          ({"rows": [[0.0] * 64]}, "got keys ['rows']")):  # fmt: skip
            with pytest.raises(ApiClientError) as refused:
                client.invoke(model, bad, channel_id=channel)
            assert (refused.value.status, refused.value.code) == (422, "bad_model_input"), refused.value
            assert says in refused.value.detail
        X, _ = load_source("digits")
        answered = client.invoke(model, {"features": X[:2].tolist()}, channel_id=channel)
        assert len(answered.output["labels"]) == 2 and answered.payment.debited == price
    assert market.channels.channel(channel).claimed == price  # one call answered, one call paid
