"""A tiny model to sell: an iris classifier (nearest centroid, 93% right on iris.csv), no dependencies.

Serve it as a model asset from the directory this file is in::

    agentmarket serve --model 2=iris_model:predict

A caller sends the four measurements of a flower in cm (``[5.1, 3.5, 1.4, 0.2]``) and gets its species
(``"setosa"``), or a list of such rows and gets a list of species. Anything else is a ``ValueError``, which the
gateway answers with a 422 (and the call is not charged).
"""

from __future__ import annotations

import math
from typing import Any

#: Mean sepal length, sepal width, petal length and petal width (cm) of each species in iris.csv.
CENTROIDS = {
    "setosa": (5.006, 3.428, 1.462, 0.246),
    "versicolor": (5.936, 2.770, 4.260, 1.326),
    "virginica": (6.588, 2.974, 5.552, 2.026),
}
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def classify(row: Any) -> str:
    """The species whose centroid is nearest to ``row`` (four finite numbers, in cm)."""
    if not isinstance(row, list) or len(row) != len(FEATURES):
        raise ValueError(f"a flower is a list of {len(FEATURES)} numbers ({', '.join(FEATURES)}, in cm), not {row!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row):
        raise ValueError(f"the measurements must be finite numbers, not {row!r}")
    return min(CENTROIDS, key=lambda species: math.dist(row, CENTROIDS[species]))


def predict(payload: Any) -> str | list[str]:
    """The species of one flower (``[5.1, 3.5, 1.4, 0.2]``) or of each flower in a list of them."""
    if isinstance(payload, list) and payload and all(isinstance(row, list) for row in payload):
        return [classify(row) for row in payload]
    return classify(payload)
