"""The account ensemble keeps PyOD's scores while scoring faster."""

from __future__ import annotations

import numpy as np
import pytest
from pyod.models.copod import COPOD
from pyod.models.ecod import ECOD
from pyod.models.iforest import IForest

from detector.model import AccountEnsemble, FlatIForest, SortedCOPOD, SortedECOD


@pytest.mark.parametrize(("fast", "reference"), [(SortedECOD, ECOD), (SortedCOPOD, COPOD)])
def test_sorted_ecdf_detectors_score_exactly_as_pyod(fast: type, reference: type) -> None:
    rng = np.random.default_rng(3)
    X = np.round(rng.lognormal(size=(2000, 6)), 1)
    X[:, 2] = 0.0  # a constant column: skewness NaN, which PyOD turns into 0
    Y = np.round(rng.lognormal(size=(150, 6)) * 1.5, 1)
    ours, theirs = fast().fit(X), reference().fit(X)
    np.testing.assert_allclose(ours.decision_scores_, theirs.decision_scores_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.decision_function(Y), theirs.decision_function(Y), rtol=0, atol=1e-9)
    assert ours.threshold_ == theirs.threshold_
    # refitting the same object scores against the new training data only
    ours.fit(X[:500])
    theirs.fit(X[:500])
    np.testing.assert_allclose(ours.decision_function(Y), theirs.decision_function(Y), rtol=0, atol=1e-9)


def test_training_scores_are_what_decision_function_gives_the_training_rows() -> None:
    rng = np.random.default_rng(5)
    X = rng.lognormal(size=(1500, 4))
    model = AccountEnsemble(features=("a", "b", "c", "d")).fit(X)
    np.testing.assert_allclose(model.decision_scores_, model.decision_function(X), atol=2 / len(X))
    outlier = np.array([[X[:, 0].max() * 50, 0.0, X[:, 2].max() * 50, 0.0]])
    assert model.decision_function(outlier)[0] > np.quantile(model.decision_scores_, 0.99)


@pytest.mark.parametrize("n", [1, 2, 40, 256, 257, 3000, 26_000])
def test_flat_iforest_scores_bit_for_bit_as_pyod(n: int) -> None:
    rng = np.random.default_rng(n)
    X = np.round(rng.lognormal(size=(n, 7)), 2)
    X[:, 3] = 1.0  # a constant column: never split on
    X[:, 5] = np.round(X[:, 5])  # ties sit exactly on thresholds
    Y = np.round(np.vstack([rng.lognormal(size=(300, 7)) * 1.7, X[:50]]), 2)
    ours = FlatIForest(contamination=0.02, random_state=42, n_estimators=100).fit(X)
    theirs = IForest(contamination=0.02, random_state=42, n_estimators=100).fit(X)
    # exact equality: the ensemble ranks these scores, so a last-bit difference could move a flag
    assert np.array_equal(ours.decision_scores_, theirs.decision_scores_)
    assert np.array_equal(ours.decision_function(Y), theirs.decision_function(Y))
    assert ours.threshold_ == theirs.threshold_ or (np.isnan(ours.threshold_) and np.isnan(theirs.threshold_))
    assert np.array_equal(ours.predict(Y), theirs.predict(Y))


@pytest.mark.parametrize(
    ("n", "rows"),
    # each of sklearn's row subsampling methods: none (n <= 256), reservoir (257, 258),
    # permutation (up to 25,600 rows) and tracking selection (beyond)
    [(7, "none"), (256, "none"), (258, "reservoir"), (5000, "permutation"), (30_000, "tracking")],
)
def test_flat_iforest_grows_sklearns_trees_node_for_node(n: int, rows: str) -> None:
    rng = np.random.default_rng(n)
    X = np.round(rng.lognormal(size=(n, 6)), 1)  # coarse values: many ties and constant nodes
    X[:, 1] = 2.0
    X[: n // 2, 4] = 0.0
    ours = FlatIForest(contamination=0.02, random_state=7, n_estimators=30).fit(X)
    assert not hasattr(ours.detector_, "estimators_")  # grown here, not by sklearn
    theirs = FlatIForest(contamination=0.02, random_state=7, n_estimators=30)
    theirs._grows_own_trees = lambda X32: False  # type: ignore[method-assign]
    theirs.fit(X)
    for name in ("feature_", "threshold_node_", "child_", "path_", "steps_", "denominator_"):
        assert np.array_equal(getattr(ours, name), getattr(theirs, name)), name
    assert np.array_equal(ours.decision_scores_, theirs.decision_scores_)


def test_flat_iforest_falls_back_to_sklearn_where_it_cannot_reproduce_it() -> None:
    X = np.random.default_rng(0).lognormal(size=(500, 3))
    # a RandomState instance: sklearn draws from it in an order of its own (seeds, then y)
    ours = FlatIForest(contamination=0.02, random_state=np.random.RandomState(3), n_estimators=20).fit(X)
    theirs = IForest(contamination=0.02, random_state=np.random.RandomState(3), n_estimators=20).fit(X)
    assert hasattr(ours.detector_, "estimators_")
    assert np.array_equal(ours.decision_scores_, theirs.decision_scores_)


def test_subsample_and_path_lengths_are_sklearns() -> None:
    from sklearn.ensemble._iforest import _average_path_length
    from sklearn.utils.random import sample_without_replacement

    from detector.model import _path_length_of, _subsample

    counts = np.arange(0, 600)
    assert np.array_equal(_path_length_of(counts), _average_path_length(counts))
    for n in (255, 256, 257, 258, 259, 25_600, 25_601, 10**6):
        for seed in range(20):
            k = min(256, n)
            theirs = sample_without_replacement(n, k, random_state=np.random.RandomState(seed))
            rs = np.random.RandomState()
            rs.seed(seed)
            assert np.array_equal(np.sort(_subsample(n, k, rs)), np.sort(theirs)), (n, seed)
