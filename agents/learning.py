"""Data shards and real models: what a builder agent buys, trains and serves, and what simulations value.

A ``Shard`` is a block of labelled rows (the content of one dataset asset). Shards travel as CSV bytes
(``encode_shard`` / ``decode_shard``, exact round trip). Quality defects (label noise, duplicated rows
resold from another shard) are seeded and return new shards. ``train_model`` fits a scikit-learn k-NN
or logistic-regression classifier, and ``predictor`` turns a fitted model into a marketplace
inference handler.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn import datasets
from sklearn.base import ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from agents.errors import BadDataset
from marketplace.inference import ModelInputError

ModelKind = Literal["knn", "logreg"]
MODEL_KINDS: tuple[str, ...] = ("knn", "logreg")

#: Names ``load_source`` accepts: scikit-learn's bundled datasets plus a seeded synthetic one.
SOURCES: tuple[str, ...] = ("digits", "breast_cancer", "wine", "iris", "make_classification")

#: Shape of the seeded synthetic source.
SYNTHETIC_ROWS, SYNTHETIC_FEATURES, SYNTHETIC_CLASSES = 1500, 20, 3

#: Iterations for logistic regression: enough to converge on standardised digits without warnings.
LOGREG_MAX_ITER = 5000

#: Most rows one inference request may carry.
MAX_PREDICT_ROWS = 10_000

RandomSource = np.random.Generator | int


@dataclass(frozen=True)
class Shard:
    """Labelled rows: ``X`` (float64, rows by features) and ``y`` (int64, one label per row)."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        features = np.asarray(self.X, dtype=np.float64)
        labels = np.asarray(self.y)
        if features.ndim != 2:
            raise ValueError(f"shard features must be 2-D (rows by features), got shape {features.shape}")
        if labels.ndim != 1:
            raise ValueError(f"shard labels must be 1-D, got shape {labels.shape}")
        if labels.size and not np.array_equal(labels, np.round(labels)):
            raise ValueError("shard labels must be integers")
        if len(features) != len(labels):
            raise ValueError(f"shard has {len(features)} feature rows but {len(labels)} labels")
        object.__setattr__(self, "X", features)
        object.__setattr__(self, "y", labels.astype(np.int64, copy=False))

    @property
    def rows(self) -> int:
        """Number of labelled rows."""
        return len(self.y)

    @property
    def features(self) -> int:
        """Number of feature columns."""
        return self.X.shape[1]


def _generator(rng: RandomSource) -> np.random.Generator:
    """A numpy Generator from a seed, or the Generator itself."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def load_source(name: str, seed: int = 0, rows: int = SYNTHETIC_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64) and labels (int64) of a bundled dataset; ``seed`` and ``rows`` only matter for the
    synthetic one.

    Nothing is downloaded: ``digits``, ``breast_cancer``, ``wine`` and ``iris`` ship with scikit-learn;
    ``make_classification`` is generated (``rows`` rows, default 1500; 20 features, 3 classes; seeded), so a
    large scenario can have as many distinct rows as it needs. Raises ``ValueError`` for another name.
    """
    loaders: dict[str, Callable[[], Any]] = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if name in loaders:
        bunch = loaders[name]()
        X, y = bunch.data, bunch.target
    elif name == "make_classification":
        X, y = datasets.make_classification(
            n_samples=rows, n_features=SYNTHETIC_FEATURES, n_informative=10, n_redundant=4,
            n_classes=SYNTHETIC_CLASSES, class_sep=1.0, random_state=seed,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)}")
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def load_csv(path: str | Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Your own data: features (float64) and labels (int64) from the CSV file ``path`` (UTF-8, a header line naming
    the columns; every column but ``label`` is a numeric feature). Labels may be any text or numbers: the
    distinct values, sorted (numerically when all are numbers), become classes 0, 1, ….

    Raises ``BadDataset`` with a one-line message naming the file, and the line and column where it applies: a
    missing or unreadable file, no ``label`` column, a cell that is not a finite number, a line with the wrong
    number of fields, fewer than 2 rows or 2 classes, no feature column.
    """
    X, y = _read_csv(*_file_key(path), label)
    return X.copy(), y.copy()  # the cached arrays stay as read


def _file_key(path: str | Path) -> tuple[str, int, int]:
    """``(path, mtime_ns, size)``: a cache key that changes when the file does; ``BadDataset`` if it is missing."""
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise BadDataset(f"data file {path}: {exc.strerror or exc}") from None
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _read_csv(path: str, _mtime_ns: int, _size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"data file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDataset(f"{where}: cannot read it as UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if label not in header:
            shown = ", ".join(header[:20]) + (", …" if len(header) > 20 else "")
            raise BadDataset(f"{where}, line 1: no label column {label!r} in the header (columns: {shown or 'none'})")
        if len(header) < 2:
            raise BadDataset(f"{where}, line 1: needs at least one feature column besides {label!r}")
        target = header.index(label)
        columns = [index for index in range(len(header)) if index != target]
        features: list[list[float]] = []
        labels: list[str] = []
        for fields in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in fields):
                continue  # a blank line
            if len(fields) != len(header):
                raise BadDataset(f"{where}, line {line}: expected {len(header)} fields, got {len(fields)}")
            features.append([_finite_number(fields[c], f"{where}, line {line}, column {header[c]!r}") for c in columns])
            labels.append(fields[target].strip())
    except csv.Error as exc:
        raise BadDataset(f"{where}, line {reader.line_num}: {exc}") from None
    classes = sorted(set(labels), key=_label_order)
    if len(features) < 2 or len(classes) < 2:
        raise BadDataset(f"{where}: needs at least 2 rows and 2 classes, got {len(features)} rows and "
                         f"{len(classes)} class(es) in column {label!r}")  # fmt: skip
    index = {value: number for number, value in enumerate(classes)}
    return np.array(features, dtype=np.float64), np.array([index[value] for value in labels], dtype=np.int64)


def _finite_number(text: str, place: str) -> float:
    """``text`` as a finite float, or ``BadDataset`` naming ``place`` (file, line and column) and the value."""
    try:
        number = float(text)
    except ValueError:
        raise BadDataset(f"{place}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise BadDataset(f"{place}: {text!r} is not a finite number")
    return number


def _label_order(value: str) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then text in text order."""
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def split_holdout(
    X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)``: a seeded split stratified by label."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    return X_train, y_train, X_test, y_test


def make_shards(X: np.ndarray, y: np.ndarray, sizes: Sequence[int], seed: int) -> list[Shard]:
    """Disjoint shards of the requested sizes, each drawn from random rows of ``X``/``y`` (seeded)."""
    if any(size < 1 for size in sizes):
        raise ValueError(f"every shard size must be at least 1, got {list(sizes)}")
    needed, available = sum(sizes), len(y)
    if needed > available:
        raise ValueError(f"shards need {needed} rows in total but only {available} are available")
    order = np.random.default_rng(seed).permutation(available)
    shards, start = [], 0
    for size in sizes:
        picked = order[start : start + size]
        shards.append(Shard(X[picked], y[picked]))
        start += size
    return shards


def _defect_count(rate: float, rows: int) -> int:
    """How many rows a defect of ``rate`` touches (rounded), after checking the rate."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be between 0 and 1, got {rate}")
    return round(rate * rows)


def with_label_noise(shard: Shard, rate: float, n_classes: int, rng: RandomSource) -> Shard:
    """A copy of ``shard`` where exactly ``round(rate * rows)`` labels are flipped to a different class.

    Labels must lie in ``0 .. n_classes - 1``; each flipped label moves to one of the other classes,
    uniformly at random.
    """
    if n_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {n_classes}")
    if shard.rows and (shard.y.min() < 0 or shard.y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1} to add label noise")
    count = _defect_count(rate, shard.rows)
    generator = _generator(rng)
    flipped = generator.choice(shard.rows, size=count, replace=False)
    labels = shard.y.copy()
    labels[flipped] = (labels[flipped] + generator.integers(1, n_classes, size=count)) % n_classes
    return Shard(shard.X.copy(), labels)


def with_duplicates(shard: Shard, source: Shard, rate: float, rng: RandomSource) -> Shard:
    """A copy of ``shard`` where ``round(rate * rows)`` random rows are replaced by copies of ``source`` rows.

    This models a free rider reselling someone else's data. Source rows are drawn without
    replacement when the source has enough of them.
    """
    if source.features != shard.features:
        raise ValueError(f"source has {source.features} features but the shard has {shard.features}")
    count = _defect_count(rate, shard.rows)
    if count and not source.rows:
        raise ValueError("cannot copy rows from an empty source shard")
    generator = _generator(rng)
    replaced = generator.choice(shard.rows, size=count, replace=False)
    copied = generator.choice(source.rows, size=count, replace=count > source.rows)
    features, labels = shard.X.copy(), shard.y.copy()
    features[replaced], labels[replaced] = source.X[copied], source.y[copied]
    return Shard(features, labels)


def _csv_header(n_features: int) -> list[str]:
    """``f0, ..., f{n-1}, label``."""
    return [f"f{index}" for index in range(n_features)] + ["label"]


def encode_shard(shard: Shard) -> bytes:
    """The shard as UTF-8 CSV: header ``f0,...,f{n-1},label``, floats written with ``repr`` (exact round trip)."""
    lines = [",".join(_csv_header(shard.features))]
    for features, label in zip(shard.X.tolist(), shard.y.tolist(), strict=True):
        lines.append(",".join([*map(repr, features), str(label)]))
    return ("\n".join(lines) + "\n").encode()


def decode_shard(data: bytes) -> Shard:
    """The shard encoded by ``encode_shard``; raises ``BadDataset`` naming the line and the problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadDataset(f"dataset is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BadDataset(f"line 1: {exc}") from None
    if header is None:
        raise BadDataset("dataset is empty: expected a header line f0,...,f{n-1},label")
    n_features = len(header) - 1
    if n_features < 1 or header != _csv_header(n_features):
        shown = ",".join(header)[:80]
        raise BadDataset(f"line 1: header must be f0,...,f{{n-1}},label with at least one feature, got {shown!r}")
    features: list[list[float]] = []
    labels: list[int] = []
    try:
        for fields in reader:
            line = reader.line_num
            if len(fields) != n_features + 1:
                raise BadDataset(f"line {line}: expected {n_features + 1} fields, got {len(fields)}")
            features.append([_finite_number(value, f"line {line}, column f{column}")
                             for column, value in enumerate(fields[:-1])])  # fmt: skip
            labels.append(_parse_label(fields[-1], line))
    except csv.Error as exc:
        raise BadDataset(f"line {reader.line_num}: {exc}") from None
    matrix = np.array(features, dtype=np.float64).reshape(len(features), n_features)
    return Shard(matrix, np.array(labels, dtype=np.int64))


def _parse_label(value: str, line: int) -> int:
    """One integer label, or ``BadDataset``."""
    try:
        label = int(value)
    except ValueError:
        raise BadDataset(f"line {line}, column label: {value!r} is not an integer") from None
    if not -(2**63) <= label < 2**63:
        raise BadDataset(f"line {line}, column label: {value!r} does not fit in 64 bits")
    return label


def train_model(kind: ModelKind, X: np.ndarray, y: np.ndarray, *, seed: int = 0, k: int = 5) -> ClassifierMixin:
    """A scikit-learn classifier fitted on ``X``/``y``.

    ``knn``: k-nearest neighbours (Euclidean, ``n_neighbors = min(k, rows)``). ``logreg``: standardise,
    then multinomial logistic regression. Training data with a single class gives a constant
    predictor of that class (logistic regression cannot fit it).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of: {', '.join(MODEL_KINDS)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if len(y) == 0:
        raise ValueError("cannot train a model on zero rows")
    if kind == "knn":
        model: ClassifierMixin = KNeighborsClassifier(n_neighbors=min(k, len(y)))
    elif len(np.unique(y)) < 2:
        model = DummyClassifier(strategy="most_frequent")
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed))
    return model.fit(X, y)


def accuracy(model: ClassifierMixin, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows of ``X`` whose predicted label equals ``y``."""
    if len(y) == 0:
        raise ValueError("accuracy needs at least one row")
    return float(np.mean(model.predict(np.asarray(X, dtype=np.float64)) == np.asarray(y)))


def predictor(model: ClassifierMixin | Pipeline) -> Callable[[Any], Any]:
    """A marketplace inference handler serving ``model``.

    Input: ``{"features": [[...], ...]}`` (rows) or one flat list of numbers (one row).
    Output: ``{"labels": [int, ...]}``, one label per row. Input the model cannot take (a wrong shape,
    wrong row length, a value that is no finite number) raises ``ModelInputError`` (the gateway's 422).
    """
    n_features = int(model.n_features_in_)

    def handle(payload: Any) -> dict[str, list[int]]:
        rows = _rows_from_payload(payload, n_features)
        return {"labels": [int(label) for label in model.predict(rows)]}

    return handle


def _rows_from_payload(payload: Any, n_features: int) -> np.ndarray:
    """The float64 matrix an inference request carries, or ``ModelInputError`` saying what is wrong."""
    usage = f'input must be {{"features": [[{n_features} numbers], ...]}} or one list of {n_features} numbers'
    if isinstance(payload, dict):
        if set(payload) != {"features"}:
            raise ModelInputError(f"{usage}; got keys {sorted(map(str, payload))}")
        payload = payload["features"]
        if isinstance(payload, list) and payload and not isinstance(payload[0], list):
            payload = [payload]
    elif isinstance(payload, list):
        payload = [payload]
    else:
        raise ModelInputError(f"{usage}; got {type(payload).__name__}")
    if not isinstance(payload, list) or not payload:
        raise ModelInputError(f"{usage}; got no rows")
    if len(payload) > MAX_PREDICT_ROWS:
        raise ModelInputError(f"at most {MAX_PREDICT_ROWS} rows per request, got {len(payload)}")
    for index, row in enumerate(payload):
        if not isinstance(row, list):
            raise ModelInputError(f"{usage}; row {index} is a {type(row).__name__}, not a list")
        if len(row) != n_features:
            raise ModelInputError(f"row {index} has {len(row)} features; the model expects {n_features}")
        for column, value in enumerate(row):
            if not _is_finite_number(value):
                raise ModelInputError(f"row {index}, feature {column}: {value!r} is not a finite number")
    return np.array(payload, dtype=np.float64)


def _is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is a finite float64."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


@functools.cache
def _digits_knn() -> ClassifierMixin:
    X, y = load_source("digits")
    X_train, y_train, _, _ = split_holdout(X, y, 0.3, 0)
    return train_model("knn", X_train, y_train)


def digits_classifier(payload: Any) -> Any:
    """A ready model to serve: k-NN trained on the training split (seed 0) of scikit-learn's digits.

    ``agentmarket serve --model ID=agents.learning:digits_classifier``; input ``{"features": [[64 numbers]]}``.
    """
    return predictor(_digits_knn())(payload)
