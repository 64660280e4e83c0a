"""The account anomaly ensemble, kept to PyOD's contract.

`fit(X)` learns from a population of account feature vectors; `decision_function(X)` returns a
score in [0, 1], higher = more anomalous: the mean, over ECOD, COPOD and IForest, of the share
of the training population each detector scored lower. Averaging empirical percentiles puts
detectors with different raw scales on one footing, and an account must look odd to all three
to approach 1. Fitted state lives in trailing-underscore attributes.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numba as nb
import numpy as np
import polars as pl
import pyod
import sklearn
from pyod.models.copod import COPOD
from pyod.models.ecod import ECOD
from pyod.models.ecod import skew as pyod_skew  # scipy's skew with NaN (constant column) -> 0
from pyod.models.iforest import IForest
from sklearn.ensemble import IsolationForest
from sklearn.utils import check_array
from sklearn.utils.random import sample_without_replacement
from sklearn.utils.validation import check_is_fitted

from core.errors import ModelMismatch

log = logging.getLogger(__name__)

ARTEFACT_FORMAT = "distillguard.model/v1"


def library_versions() -> dict[str, str]:
    """Versions whose change can alter a fitted model's behaviour."""
    return {
        "pyod": pyod.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "polars": pl.__version__,
    }


@dataclass(frozen=True)
class Reason:
    """Why an account scored high: a feature, its value and the population baseline."""

    feature: str
    value: float
    baseline: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": round(self.value, 6),
            "baseline": round(self.baseline, 6),
            "detail": self.detail,
        }


class _SortedECDF:
    """ECOD/COPOD scores computed as PyOD defines them, without re-sorting the training data.

    PyOD's `decision_function` ranks training + new rows together by sorting their concatenation
    on every call: O(n log n) per call however few rows are scored, and it runs every tick. The
    same empirical CDF is a count of training values at or below a value (a binary search in
    the training columns, sorted once at fit) plus the count among the new rows: the scores
    are PyOD's own, at O(m log n).
    """

    X_train: np.ndarray  # set by PyOD's fit

    def fit(self, X: np.ndarray, y: Any = None) -> Any:
        """PyOD's fit, then the training columns sorted for scoring."""
        self.__dict__.pop("sorted_train_", None)  # a refit's own scoring must be PyOD's, not the old sort's
        super().fit(X, y)  # type: ignore[misc]
        self.sorted_train_ = np.sort(np.asarray(X, dtype=np.float64), axis=0)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The detector's score of each row of `X`, as PyOD computes it."""
        if not hasattr(self, "sorted_train_"):
            return super().decision_function(X)  # type: ignore[misc]  # inside fit: PyOD scores the training data
        return self._combine(*self._tails(np.asarray(X, dtype=np.float64)))

    def _combine(self, u_l: np.ndarray, u_r: np.ndarray, u_skew: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _tails(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-log left ECDF, -log right ECDF and their skewness-chosen combination, per cell."""
        ref = self.sorted_train_
        n, m = ref.shape[0], X.shape[0]
        le = np.empty(X.shape)
        ge = np.empty(X.shape)
        for j in range(X.shape[1]):  # one binary search per feature column, not per row
            own = np.sort(X[:, j])
            le[:, j] = np.searchsorted(ref[:, j], X[:, j], side="right") + np.searchsorted(own, X[:, j], side="right")
            ge[:, j] = (n - np.searchsorted(ref[:, j], X[:, j], side="left")) + (
                m - np.searchsorted(own, X[:, j], side="left")
            )
        u_l = -np.log(le / (n + m))
        u_r = -np.log(ge / (n + m))
        # skewness over training + new rows in PyOD's order: a near-constant column's skew is NaN
        # or not depending on summation order, and PyOD's scores depend on which
        sk = np.sign(pyod_skew(np.concatenate((self.X_train, X), axis=0), axis=0))
        u_skew = u_l * -1 * np.sign(sk - 1) + u_r * np.sign(sk + 1)
        return u_l, u_r, u_skew


class SortedECOD(_SortedECDF, ECOD):
    """PyOD's ECOD with the training columns sorted once (see `_SortedECDF`)."""

    def _combine(self, u_l: np.ndarray, u_r: np.ndarray, u_skew: np.ndarray) -> np.ndarray:
        return np.maximum(np.maximum(u_l, u_r), u_skew).sum(axis=1)


class SortedCOPOD(_SortedECDF, COPOD):
    """PyOD's COPOD with the training columns sorted once (see `_SortedECDF`)."""

    def _combine(self, u_l: np.ndarray, u_r: np.ndarray, u_skew: np.ndarray) -> np.ndarray:
        return np.maximum(u_skew, (u_l + u_r) / 2).sum(axis=1)


# sklearn's constants for growing isolation trees (ensemble seeds, the tree splitter's rand_r)
_MAX_INT = int(np.iinfo(np.int32).max)
_RAND_R_MAX = 2147483647
_FEATURE_THRESHOLD = np.float32(1e-7)
_EPSILON = float(np.finfo(np.float64).eps)


class _Tree(NamedTuple):
    """One fitted isolation tree as sklearn's node arrays (leaves: children -1)."""

    children_left: np.ndarray
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    n_node_samples: np.ndarray
    depth: np.ndarray  # sklearn's compute_node_depths: the root is 1


def _path_length_of(n_samples_leaf: np.ndarray) -> np.ndarray:
    """sklearn's `_average_path_length`, the same numpy operations without its input validation."""
    n = n_samples_leaf.reshape((1, -1))
    out = np.zeros(n.shape)
    mask_1 = n <= 1
    mask_2 = n == 2
    not_mask = ~np.logical_or(mask_1, mask_2)
    out[mask_1] = 0.0
    out[mask_2] = 1.0
    out[not_mask] = 2.0 * (np.log(n[not_mask] - 1.0) + np.euler_gamma) - 2.0 * (n[not_mask] - 1.0) / n[not_mask]
    return out.reshape(n_samples_leaf.shape)


def _subsample(n: int, k: int, rs: np.random.RandomState) -> np.ndarray:
    """sklearn's `sample_without_replacement(n, k)` as a set (its order aside), drawn from `rs`.

    Beyond 25,600 rows sklearn picks 256 by tracking selection, one `randint(n)` call per draw
    from Cython, redrawing repeats (~0.5 ms a tree); the same draws come from one call for a
    batch (legacy randint draws a batch as it draws one at a time), the repeats dropped.
    """
    if not k / n < 0.01:
        return np.asarray(sample_without_replacement(n, k, random_state=rs))
    picked = np.empty(0, dtype=np.int64)
    while True:
        draws = np.concatenate((picked, rs.randint(n, size=k + 16)))
        _, first = np.unique(draws, return_index=True)
        if len(first) >= k:
            return draws[np.sort(first)[:k]]
        picked = draws[np.sort(first)]


class FlatIForest(IForest):
    """PyOD's IForest, its trees walked as arrays: the same scores without sklearn's per-tree calls.

    sklearn's IsolationForest scores a call tree by tree (a validated `apply` and a locked sum
    each): ~10 ms for a handful of rows, paid every tick; with a contamination it also scores
    the whole training set inside `fit`, and PyOD then scores it again. Here the fitted trees
    are flattened into padded node arrays once, every row descends all trees together (a tree
    is at most `max_depth` splits deep), and path lengths are summed tree by tree in sklearn's
    order, so scores are sklearn's to the bit (tested). The training set is scored once. With
    an integer random_state the trees are also grown here (`_grow`), node for node as sklearn
    grows them, at ~2 ms a forest instead of ~0.3 s; otherwise sklearn grows them.
    """

    def fit(self, X: np.ndarray, y: Any = None) -> FlatIForest:
        """PyOD's fit, the trees grown as sklearn grows them and the training set scored once."""
        X = check_array(X)
        self._set_n_classes(y)
        # contamination="auto": sklearn would otherwise score all of X to place offset_
        self.detector_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            contamination="auto",
            max_features=self.max_features,
            bootstrap=self.bootstrap,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbose=self.verbose,
        )
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        if self._grows_own_trees(X32):
            self._flatten(self._grow(X32))
        else:
            self.detector_.fit(X)
            self._flatten(self._sklearn_trees())
        samples = self._score_samples(X)
        # the offset sklearn would have placed for this contamination
        self.score_offset_ = float(np.percentile(samples, 100.0 * self.contamination))
        self.decision_scores_ = -(samples - self.score_offset_)
        self._process_decision_scores()
        return self

    def _grows_own_trees(self, X32: np.ndarray) -> bool:
        """Whether `_grow` reproduces sklearn here: the defaults the ensemble uses, finite data."""
        return (
            isinstance(self.random_state, (int, np.integer))
            and not isinstance(self.random_state, bool)
            and self.max_samples == "auto"
            and self.max_features == 1.0
            and not self.bootstrap
            and bool(np.isfinite(X32).all())
        )

    def _grow(self, X32: np.ndarray) -> list[_Tree]:
        """sklearn's isolation trees, grown by `_grow_tree` from sklearn's own random draws.

        sklearn spends ~2-3 ms of Python per tree (estimator cloning, parameter validation,
        bagging bookkeeping) to grow a tree of at most 511 nodes: ~0.3 s a fit whatever the
        population, paid at every refit. The draws below are sklearn's, in its order (bagging
        seeds, each tree's seed, its row subsample, the splitter's rand_r state), so the trees
        are node for node the ones `IsolationForest.fit` would grow (tested).
        """
        n, n_features = X32.shape
        max_samples = min(256, n)
        max_depth = int(np.ceil(np.log2(max(max_samples, 2))))
        y = np.asarray(np.random.RandomState(self.random_state).uniform(size=n))
        seeds = np.asarray(np.random.RandomState(self.random_state).randint(_MAX_INT, size=self.n_estimators))
        # one generator re-seeded per draw: RandomState(seed) would also gather OS entropy for a
        # generator it then re-seeds (~0.3 ms each, three per tree); the streams are the same
        rs = np.random.RandomState()
        trees = []
        for seed in seeds:
            rs.seed(seed)
            tree_seed = rs.randint(_MAX_INT)  # ensemble._set_random_states
            rs.seed(seed)  # the bagging draws start again from the same seed
            sample_without_replacement(n_features, n_features, random_state=rs)  # the feature draw
            rows = np.sort(_subsample(n, max_samples, rs))
            rs.seed(tree_seed)
            rand_r = rs.randint(0, _RAND_R_MAX)  # the splitter's state
            nodes = _grow_tree(X32[rows], y[rows], int(rand_r), max_depth)
            trees.append(_Tree(*nodes))
        self.subsample_ = max_samples
        return trees

    def _sklearn_trees(self) -> list[_Tree]:
        """The fitted sklearn forest's trees as `_Tree`s."""
        forest = self.detector_
        if forest._max_features != forest.n_features_in_:
            raise ValueError("FlatIForest needs every feature in every tree (max_features=1.0)")
        self.subsample_ = forest.max_samples_
        return [
            _Tree(
                t.children_left[: t.node_count],
                t.children_right[: t.node_count],
                t.feature[: t.node_count],
                t.threshold[: t.node_count],
                t.n_node_samples[: t.node_count],
                depth,
            )
            for t, depth in zip((e.tree_ for e in forest.estimators_), forest._decision_path_lengths, strict=True)
        ]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Outlier score of each row of `X` (higher = more anomalous), as PyOD's IForest gives it."""
        check_is_fitted(self, ["decision_scores_", "threshold_", "labels_"])
        return -(self._score_samples(check_array(X)) - self.score_offset_)

    def _flatten(self, trees: list[_Tree]) -> None:
        """Per-tree node arrays: split feature, threshold, (left, right) child, leaf path length.

        A leaf is its own child (feature 0, either way back to itself), so every row takes the
        same number of steps down every tree and the walk has no branches.
        """
        width = max(len(t.feature) for t in trees)
        shape = (len(trees), width)
        self.feature_ = np.zeros(shape, dtype=np.int32)
        self.threshold_node_ = np.zeros(shape)
        self.child_ = np.zeros((*shape, 2), dtype=np.int32)
        self.path_ = np.zeros(shape)
        self.steps_ = 0
        for i, t in enumerate(trees):
            n = len(t.feature)
            leaf = t.children_left < 0
            own = np.arange(n)
            self.feature_[i, :n] = np.where(leaf, 0, t.feature)
            self.threshold_node_[i, :n] = t.threshold
            self.child_[i, :n, 0] = np.where(leaf, own, t.children_left)
            self.child_[i, :n, 1] = np.where(leaf, own, t.children_right)
            # what sklearn adds per tree for a row ending in this leaf (its own expression, to the bit)
            self.path_[i, :n] = t.depth + _path_length_of(t.n_node_samples) - 1.0
            self.steps_ = max(self.steps_, int(t.depth.max()))
        self.denominator_ = len(trees) * float(_path_length_of(np.array([self.subsample_]))[0])

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        """sklearn's `score_samples` (lower = more abnormal), computed on the flattened trees."""
        # sklearn compares float32 inputs with float64 thresholds
        depths = _forest_depths(
            np.ascontiguousarray(X, dtype=np.float32),
            self.feature_,
            self.threshold_node_,
            self.child_,
            self.path_,
            self.steps_,
        )
        if not self.denominator_:
            return -np.ones(X.shape[0])
        return -(2 ** (-np.divide(depths, self.denominator_)))


@nb.njit(cache=True)
def _forest_depths(
    X: np.ndarray, feature: np.ndarray, threshold: np.ndarray, child: np.ndarray, path: np.ndarray, steps: int
) -> np.ndarray:
    """Per row, the sum over trees (in tree order, as sklearn adds them) of its leaf's path length."""
    n = X.shape[0]
    out = np.zeros(n)
    node = np.zeros(n, dtype=np.int32)
    for t in range(feature.shape[0]):
        f, th, ch, p = feature[t], threshold[t], child[t], path[t]
        node[:] = 0
        # level by level over all rows: the rows' walks are independent, so they overlap in the CPU
        for _ in range(steps):
            for r in range(n):
                k = node[r]
                node[r] = ch[k, np.int64(np.float64(X[r, f[k]]) > th[k])]
        for r in range(n):
            out[r] += p[node[r]]
    return out


@nb.njit(cache=True)
def _rand_r(state: np.ndarray) -> int:
    """sklearn's our_rand_r: a 32-bit xorshift, the state kept in state[0]."""
    x = state[0]
    if x == 0:
        x = 1
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    state[0] = x
    return x % (_RAND_R_MAX + 1)


@nb.njit(cache=True)
def _grow_tree(
    X: np.ndarray, y: np.ndarray, seed: int, max_depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's ExtraTreeRegressor(max_features=1) grown on rows X (float32) with targets y.

    The rows are the tree's subsample in index order (sklearn's splitter keeps the rows of
    non-zero weight in that order), each of weight 1. Depth-first, left child first, with
    sklearn's feature draws, constant-feature bookkeeping, thresholds, in-place partition and
    squared-error impurities, so node ids, splits and sample counts are sklearn's.
    """
    n, n_features = X.shape
    cap = 2 * n + 1
    left = np.full(cap, -1, dtype=np.int64)
    right = np.full(cap, -1, dtype=np.int64)
    feature = np.full(cap, -2, dtype=np.int64)
    threshold = np.full(cap, -2.0)
    count = np.zeros(cap, dtype=np.int64)
    depths = np.zeros(cap, dtype=np.int64)
    state = np.empty(1, dtype=np.int64)  # a uint32 held in an int64: numba keeps the xorshift integral
    state[0] = np.int64(seed)
    samples = np.arange(n)
    values = np.empty(n, dtype=np.float32)
    features = np.arange(n_features)
    constant = np.empty(n_features, dtype=np.int64)
    weighted_n_samples = float(n)
    # the depth-first stack: start, end, depth, parent, is_left, impurity, n_constant_features
    stack_i = np.empty((2 * max_depth + 4, 6), dtype=np.int64)
    stack_f = np.empty(2 * max_depth + 4)
    top = 0
    stack_i[0, 0], stack_i[0, 1], stack_i[0, 2], stack_i[0, 3], stack_i[0, 4], stack_i[0, 5] = 0, n, 0, -1, 0, 0
    stack_f[0] = np.inf
    top = 1
    nodes = 0
    first = True
    while top > 0:
        top -= 1
        start, end, depth, parent, is_left, n_known = stack_i[top]
        impurity = stack_f[top]
        n_node = end - start
        # the criterion's node sums (weights are 1)
        sum_total = 0.0
        sq_sum_total = 0.0
        wn_node = 0.0
        for p in range(start, end):
            yi = y[samples[p]]
            sum_total += yi
            sq_sum_total += yi * yi
            wn_node += 1.0
        is_leaf = depth >= max_depth or n_node < 2
        if first:
            impurity = sq_sum_total / wn_node - (sum_total / wn_node) ** 2
            first = False
        is_leaf = is_leaf or impurity <= _EPSILON
        split_pos = end
        split_feature = -2
        split_threshold = -2.0
        impurity_left = 0.0
        impurity_right = 0.0
        n_total = n_known
        if not is_leaf:
            # node_split_random with max_features=1: draw until one feature is not constant here
            f_i = n_features
            n_found = 0
            n_drawn = 0
            n_visited = 0
            while f_i > n_total and (n_visited < 1 or n_visited <= n_found + n_drawn):
                n_visited += 1
                f_j = n_drawn + _rand_r(state) % (f_i - n_found - n_drawn)
                if f_j < n_known:
                    features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
                    n_drawn += 1
                    continue
                f_j += n_found
                current = features[f_j]
                lo = np.float32(np.inf)
                hi = np.float32(-np.inf)
                for p in range(start, end):
                    v = X[samples[p], current]
                    values[p] = v
                    if p == start:
                        lo = v
                        hi = v
                    elif v < lo:
                        lo = v
                    elif v > hi:
                        hi = v
                if hi <= lo + _FEATURE_THRESHOLD:
                    features[f_j], features[n_total] = features[n_total], current
                    n_found += 1
                    n_total += 1
                    continue
                f_i -= 1
                features[f_i], features[f_j] = features[f_j], features[f_i]
                r = _rand_r(state)
                thr = (np.float64(hi) - np.float64(lo)) * np.float64(r) / np.float64(_RAND_R_MAX) + np.float64(lo)
                if thr == np.float64(hi):
                    thr = np.float64(lo)
                # partition in place, sklearn's way (a row going right swaps with the end)
                a = start
                b = end
                while a < b:
                    if np.float64(values[a]) <= thr:
                        a += 1
                    else:
                        b -= 1
                        values[a], values[b] = values[b], values[a]
                        samples[a], samples[b] = samples[b], samples[a]
                if b - start < 1 or end - b < 1:
                    continue
                split_pos, split_feature, split_threshold = b, current, thr
            if split_pos < end:
                # criterion.update(pos) from the nearer end, then children_impurity
                if split_pos - start <= end - split_pos:
                    sum_left = 0.0
                    wn_left = 0.0
                    for p in range(start, split_pos):
                        sum_left += y[samples[p]]
                        wn_left += 1.0
                else:
                    sum_left = sum_total
                    wn_left = wn_node
                    for p in range(end - 1, split_pos - 1, -1):
                        sum_left -= y[samples[p]]
                        wn_left -= 1.0
                wn_right = wn_node - wn_left
                sum_right = sum_total - sum_left
                sq_sum_left = 0.0
                for p in range(start, split_pos):
                    yi = y[samples[p]]
                    sq_sum_left += yi * yi
                impurity_left = sq_sum_left / wn_left - (sum_left / wn_left) ** 2
                impurity_right = (sq_sum_total - sq_sum_left) / wn_right - (sum_right / wn_right) ** 2
                improvement = (wn_node / weighted_n_samples) * (
                    impurity - (wn_right / wn_node * impurity_right) - (wn_left / wn_node * impurity_left)
                )
                if improvement + _EPSILON < 0.0:
                    split_pos = end
            # the constant features found here stay known to this node's children, in order
            for k in range(n_known):
                features[k] = constant[k]
            for k in range(n_known, n_known + n_found):
                constant[k] = features[k]
            is_leaf = split_pos >= end
        node = nodes
        nodes += 1
        if parent >= 0:
            if is_left:
                left[parent] = node
            else:
                right[parent] = node
        count[node] = n_node
        depths[node] = depth + 1
        if not is_leaf:
            feature[node] = split_feature
            threshold[node] = split_threshold
            stack_i[top, 0], stack_i[top, 1], stack_i[top, 2] = split_pos, end, depth + 1
            stack_i[top, 3], stack_i[top, 4], stack_i[top, 5] = node, 0, n_total
            stack_f[top] = impurity_right
            top += 1
            stack_i[top, 0], stack_i[top, 1], stack_i[top, 2] = start, split_pos, depth + 1
            stack_i[top, 3], stack_i[top, 4], stack_i[top, 5] = node, 1, n_total
            stack_f[top] = impurity_left
            top += 1
    return left[:nodes], right[:nodes], feature[:nodes], threshold[:nodes], count[:nodes], depths[:nodes]


class AccountEnsemble:
    """ECOD + COPOD + IForest over log-scaled, robustly standardised account features."""

    def __init__(self, *, features: tuple[str, ...], contamination: float = 0.02, random_state: int = 42) -> None:
        self.features = tuple(features)
        self.contamination = contamination
        self.random_state = random_state

    # --- PyOD contract ---
    def fit(self, X: np.ndarray) -> AccountEnsemble:
        """Fit every detector on the population `X` (n_accounts x n_features)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected shape (n, {len(self.features)}), got {X.shape}")
        Z = np.log1p(np.clip(X, 0.0, None))
        self.median_ = np.median(Z, axis=0)
        q75, q25 = np.percentile(Z, [75, 25], axis=0)
        # floor the spread so constant features do not blow up into infinite z-scores
        self.scale_ = np.maximum(q75 - q25, 1e-3)
        Zs = (Z - self.median_) / self.scale_
        self.detectors_: list[Any] = [
            SortedECOD(contamination=self.contamination),
            SortedCOPOD(contamination=self.contamination),
            FlatIForest(contamination=self.contamination, random_state=self.random_state, n_estimators=100),
        ]
        self.train_scores_ = []
        for det in self.detectors_:
            det.fit(Zs)
            self.train_scores_.append(np.sort(det.decision_scores_))
        self.raw_median_ = np.median(X, axis=0)
        self.train_sorted_ = np.sort(X, axis=0)
        # each detector scored the training rows while fitting (what decision_function(X) would
        # return for them): combine those rather than score the whole population again
        self.decision_scores_ = np.mean(
            [
                np.searchsorted(ref, det.decision_scores_, side="right") / len(ref)
                for det, ref in zip(self.detectors_, self.train_scores_, strict=True)
            ],
            axis=0,
        )
        self.threshold_ = float(np.quantile(self.decision_scores_, 1.0 - self.contamination))
        self.n_samples_ = X.shape[0]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Combined anomaly score in [0, 1] for each row; higher = more anomalous."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return np.zeros(0)
        Zs = (np.log1p(np.clip(X, 0.0, None)) - self.median_) / self.scale_
        parts = []
        # ECOD and COPOD were fitted on the same rows: their per-cell tails are one computation
        tails: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for det, ref in zip(self.detectors_, self.train_scores_, strict=True):
            if isinstance(det, _SortedECDF) and hasattr(det, "sorted_train_"):
                tails = tails or det._tails(Zs)
                raw = det._combine(*tails)
            else:
                raw = det.decision_function(Zs)
            parts.append(np.searchsorted(ref, raw, side="right") / len(ref))
        return np.mean(parts, axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 for outliers (score above the contamination threshold), else 0."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    # --- explanations ---
    def reasons(self, x: np.ndarray, *, top: int = 3) -> list[Reason]:
        """The features on which one account is most extreme within the population, most extreme first.

        Extremeness is the share of the fitted population on the far side of the account's value,
        which reads plainly ("higher than 99.6% of accounts") whatever the feature's scale.
        """
        self._check_fitted()
        x = np.asarray(x, dtype=np.float64)
        n = self.train_sorted_.shape[0]
        below = np.array([np.searchsorted(self.train_sorted_[:, i], x[i], side="left") for i in range(len(x))]) / n
        above = (
            1.0 - np.array([np.searchsorted(self.train_sorted_[:, i], x[i], side="right") for i in range(len(x))]) / n
        )
        # how far out the account sits: the share of accounts strictly on the other side of it
        extremeness = np.maximum(below, above)
        order = np.argsort(-extremeness, kind="stable")[:top]
        out = []
        for i in order:
            higher = below[i] >= above[i]
            share = below[i] if higher else above[i]
            out.append(
                Reason(
                    feature=self.features[i],
                    value=float(x[i]),
                    baseline=float(self.raw_median_[i]),
                    detail=(
                        f"{'higher' if higher else 'lower'} than {share:.1%} of accounts "
                        f"(median {self.raw_median_[i]:.3g})"
                    ),
                )
            )
        return out

    # --- artefacts ---
    def save(self, path: Path) -> None:
        """Persist the fitted model with the library versions and feature list it was fitted with."""
        self._check_fitted()
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": ARTEFACT_FORMAT,
            "versions": library_versions(),
            "features": list(self.features),
            "model": self,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(doc, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, *, features: tuple[str, ...]) -> AccountEnsemble:
        """Load an artefact; refuse it if libraries or features differ from the running code."""
        with path.open("rb") as fh:
            doc = pickle.load(fh)  # artefacts are our own files, written by save()
        if not isinstance(doc, dict) or doc.get("format") != ARTEFACT_FORMAT:
            raise ModelMismatch(f"{path} is not a {ARTEFACT_FORMAT} artefact")
        if doc["versions"] != library_versions():
            raise ModelMismatch(f"{path} was fitted with {doc['versions']}, running {library_versions()}")
        if tuple(doc["features"]) != tuple(features):
            raise ModelMismatch(f"{path} was fitted on features {doc['features']}, expected {list(features)}")
        model = doc["model"]
        if not isinstance(model, cls):
            raise ModelMismatch(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "detectors_"):
            raise RuntimeError("AccountEnsemble is not fitted: call fit() first")
