"""Classic references in the same harness: a random forest classifier and an isolation forest.

scikit-learn grows the trees; predictions never go through scikit-learn objects. After fitting,
every tree's arrays (`children_left`, `children_right`, `feature`, `threshold`, and `value` or
`n_node_samples`) are copied into flat numpy arrays, one `TreeEnsemble`, and the sklearn
estimator is dropped. The same engine scores the model in memory and after loading, so
save -> load gives identical outputs by construction, and a saved model is JSON + safetensors
like every other deepids model (the trees' float64 thresholds stay float64).

The engine walks all trees for all records at once: one vectorised step per tree level over
the (record, tree) pairs that have not reached a leaf yet, no per-record Python loop. It
reproduces scikit-learn's own arithmetic (float32 inputs compared with float64 thresholds,
`x <= threshold` goes left; per-tree leaf probabilities summed in tree order and divided by the
number of trees; isolation-forest path lengths as in `IsolationForest.score_samples`), and
`fit` checks it against the sklearn estimator on training rows before dropping that.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl
import torch

from deepids.errors import SchemaError
from deepids.features.preprocess import feature_columns, fit_preprocessor
from deepids.io.schema import BENIGN
from deepids.models.base import BaseDetector, FitOptions, Scores, benign_training_rows, benign_validation_mask
from deepids.models.params import COMMON, FRACTION, SEED, THRESHOLD, Interval, Options
from deepids.models.registry import register
from deepids.models.supervised import TARGETS, BaseClassifier, class_weights, training_targets

log = logging.getLogger(__name__)

CLASS_WEIGHTS = ("auto", "balanced_subsample", "balanced", None)
ENGINE_TOLERANCE = 1e-9       # the numpy engine must agree with scikit-learn to this on training rows
CHECK_ROWS = 4096             # how many training rows that check uses
PAIRS_PER_CHUNK = 1 << 21     # (record, tree) pairs walked at once: bounds the engine's memory
MAX_TREES = 100_000


class _Fraction:
    """A float fraction in (0, 1] (isolation forest's max_samples, besides 'auto' and a count)."""

    def accepts(self, value) -> bool:
        return isinstance(value, float) and 0 < value <= 1

    def __str__(self) -> str:
        return "a fraction in (0, 1]"


class TreeEnsemble:
    """T decision trees as flat arrays; node ids in the arrays are local to each tree (as sklearn has them).

    `offsets[t]:offsets[t + 1]` are tree t's nodes in every per-node array. A leaf has
    `children_left == children_right == -1`. `feature` indexes the columns of the full input.
    """

    def __init__(self, offsets, children_left, children_right, feature, threshold):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.children_left = np.asarray(children_left, dtype=np.int64)
        self.children_right = np.asarray(children_right, dtype=np.int64)
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        n_nodes = int(self.offsets[-1]) if len(self.offsets) else 0
        if len(self.offsets) < 2 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 1):
            raise ValueError("tree offsets must start at 0 and give every tree at least one node")
        for name in ("children_left", "children_right", "feature", "threshold"):
            if len(getattr(self, name)) != n_nodes:
                raise ValueError(f"{name} has {len(getattr(self, name))} nodes, the offsets say {n_nodes}")
        tree_of_node = np.repeat(np.arange(self.n_trees), np.diff(self.offsets))
        base = self.offsets[:-1][tree_of_node]
        self.is_leaf = self.children_left < 0
        size = np.diff(self.offsets)[tree_of_node]
        inner = ~self.is_leaf
        local = np.arange(n_nodes, dtype=np.int64) - base
        for child in (self.children_left, self.children_right):
            # sklearn numbers a child after its parent: this also rules out cycles in damaged files
            if np.any(inner & ((child <= local) | (child >= size))):
                raise ValueError("a tree's child index points outside its tree or back up it")
        if np.any(inner & (self.feature < 0)):
            raise ValueError("an inner node has no feature")
        # global ids into the concatenated arrays (leaves point at themselves)
        own = np.arange(n_nodes, dtype=np.int64)
        self._left = np.where(self.is_leaf, own, self.children_left + base)
        self._right = np.where(self.is_leaf, own, self.children_right + base)
        self.n_features_in = int(self.feature.max(initial=-1)) + 1
        self._build_walk()

    def _build_walk(self) -> None:
        """The layout the walk uses: nodes renumbered level by level so that every right child is its
        left sibling + 1 (one gather fewer per step); a leaf's `left` is -1."""
        n_nodes = len(self.feature)
        new_of_old = np.empty(n_nodes, dtype=np.int64)
        frontier = self.offsets[:-1]
        new_of_old[frontier] = np.arange(self.n_trees)
        next_id = self.n_trees
        while frontier.size:
            inner = frontier[~self.is_leaf[frontier]]
            pair = next_id + 2 * np.arange(len(inner), dtype=np.int64)
            new_of_old[self._left[inner]] = pair
            new_of_old[self._right[inner]] = pair + 1
            next_id += 2 * len(inner)
            if next_id > n_nodes:
                raise ValueError("two tree nodes share a child: the arrays are not trees")
            frontier = np.stack([self._left[inner], self._right[inner]], axis=1).reshape(-1)
        if next_id != n_nodes:
            raise ValueError(f"the trees reach {next_id} of their {n_nodes} nodes: the arrays are not trees")
        old = np.empty(n_nodes, dtype=np.int64)
        old[new_of_old] = np.arange(n_nodes)
        leaf = self.is_leaf[old]
        self._walk_old_id = old
        self._walk_threshold = np.ascontiguousarray(self.threshold[old])
        self._walk_feature = np.where(leaf, 0, self.feature[old])
        self._walk_left = np.where(leaf, -1, new_of_old[self._left[old]])

    @property
    def n_trees(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_sklearn(cls, estimators, features_per_tree=None) -> "TreeEnsemble":
        """Copy the fitted trees of a sklearn forest (`features_per_tree` maps a tree's columns to the input's)."""
        trees = [e.tree_ for e in estimators]
        feats = []
        for k, tree in enumerate(trees):
            f = np.asarray(tree.feature, dtype=np.int64)
            if features_per_tree is not None:
                cols = np.asarray(features_per_tree[k], dtype=np.int64)
                f = np.where(f >= 0, cols[np.maximum(f, 0)], f)
            feats.append(f)
        return cls(np.r_[0, np.cumsum([t.node_count for t in trees])],
                   np.concatenate([t.children_left for t in trees]),
                   np.concatenate([t.children_right for t in trees]),
                   np.concatenate(feats), np.concatenate([t.threshold for t in trees]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"tree_offsets": torch.from_numpy(self.offsets.copy()),
                "children_left": torch.from_numpy(self.children_left.copy()),
                "children_right": torch.from_numpy(self.children_right.copy()),
                "feature": torch.from_numpy(self.feature.copy()),
                "threshold": torch.from_numpy(self.threshold.copy())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "TreeEnsemble":
        if tensors["threshold"].dtype != torch.float64:
            raise ValueError(f"tree thresholds must be float64, found {tensors['threshold'].dtype}")
        return cls(*(tensors[k].numpy() for k in ("tree_offsets", "children_left", "children_right",
                                                  "feature", "threshold")))

    def node_depths(self) -> np.ndarray:
        """Depth of every node (roots 0), level by level over all trees at once."""
        depth = np.zeros(len(self.feature), dtype=np.int64)
        frontier = self.offsets[:-1]
        level = 0
        while frontier.size:
            depth[frontier] = level
            frontier = frontier[~self.is_leaf[frontier]]
            frontier = np.concatenate([self._left[frontier], self._right[frontier]])
            level += 1
        return depth

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(n, n_trees) global id (into the flat arrays) of the leaf each record reaches in each tree.

        Inputs are finite (the preprocessor fills NaN and infinities), compared as float32 with
        float64 thresholds like sklearn does: `x <= threshold` goes left.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] < self.n_features_in:
            raise SchemaError(f"the trees need {self.n_features_in} features, got an array of shape {X.shape}")
        n, T = X.shape[0], self.n_trees
        out = np.empty(n * T, dtype=np.int64)
        step = max(1, PAIRS_PER_CHUNK // T)
        for start in range(0, n, step):
            flat = X[start:start + step].reshape(-1)
            m = min(step, n - start)
            pairs = np.arange(start * T, (start + m) * T, dtype=np.int64)     # pair p = (record p // T, tree p % T)
            node = np.tile(np.arange(T, dtype=np.int64), m)                  # every walk starts at its tree's root
            row_base = (pairs // T - start) * X.shape[1]
            while pairs.size:
                left = self._walk_left[node]
                leaf = left < 0
                if leaf.any():                                                # finished walks leave the arrays
                    out[pairs[leaf]] = node[leaf]
                    keep = ~leaf
                    pairs, node, left, row_base = pairs[keep], node[keep], left[keep], row_base[keep]
                    if not pairs.size:
                        break
                x = flat[row_base + self._walk_feature[node]]
                node = left + (x > self._walk_threshold[node])                # right child = left child + 1
        return self._walk_old_id[out].reshape(n, T)


def average_path_length(n) -> np.ndarray:
    """c(n): average path length of an unsuccessful BST search among n points, as scikit-learn computes it."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _info(verbose: bool, message: str) -> None:
    log.log(logging.INFO if verbose else logging.DEBUG, message)


def _check_engine(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    diff = float(np.max(np.abs(ours - theirs), initial=0.0))
    if not diff <= ENGINE_TOLERANCE:
        raise RuntimeError(f"{name}: the numpy tree engine disagrees with scikit-learn by {diff:.3g} "
                           f"(tolerance {ENGINE_TOLERANCE:g}); this scikit-learn version is not supported")
    return diff


def _check_rows(n: int, seed: int) -> np.ndarray:
    if n <= CHECK_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, CHECK_ROWS, replace=False))


# ====================================================================== random forest
@register
class RandomForestFlowClassifier(BaseClassifier):
    """scikit-learn's RandomForestClassifier on the shared flow features, binary or per attack family.

    Class imbalance: `class_weight="balanced_subsample"` weighs each class by
    n / (n_classes * n_class) within every tree's bootstrap sample; None leaves it unweighted;
    "auto" (default) weighs when naming families and not for binary detection, as the torch
    classifiers do.
    """

    model_name = "random-forest"

    def __init__(self, target: str = "binary", n_estimators: int = 100, max_depth: int | None = None,
                 min_samples_leaf: int = 1, class_weight: str | None = "auto", n_jobs: int = -1,
                 seed: int = 0, verbose: bool = True):
        self.target = target
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.seed = seed
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    _parameter_constraints = {
        "seed": SEED, "verbose": [bool], "target": [Options(TARGETS)], "n_estimators": [Interval(int, 1, MAX_TREES)],
        "max_depth": [Interval(int, 1, 10_000), None], "min_samples_leaf": [Interval(int, 1)],
        "class_weight": [Options(tuple(w for w in CLASS_WEIGHTS if w)), None], "n_jobs": [Interval(int)],
    }
    _fitted_attribute = "trees_"

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> None:
        from sklearn.ensemble import RandomForestClassifier

        names = training_targets(X, y, self.target)
        classes = sorted(set(names.tolist()), key=lambda c: (c != BENIGN, c))
        if len(classes) < 2:
            raise SchemaError(f"need at least two classes to learn from, got only {classes}")
        lookup = {c: i for i, c in enumerate(classes)}
        codes = np.asarray([lookup[c] for c in names], dtype=np.int64)
        preprocessor = fit_preprocessor(X, feature_columns(X))
        features = preprocessor.transform(X)

        class_weight = self.class_weight
        if class_weight == "auto":
            class_weight = "balanced_subsample" if self.target == "family" else None
        started = time.perf_counter()
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            class_weight=class_weight, n_jobs=self.n_jobs, random_state=self.seed)
        forest.fit(features, codes)
        seconds = time.perf_counter() - started
        if list(forest.classes_) != list(range(len(classes))):
            raise RuntimeError(f"scikit-learn saw classes {forest.classes_}, expected 0..{len(classes) - 1}")

        self.classes_ = classes
        self._use_preprocessor(preprocessor)
        self._set_engine(TreeEnsemble.from_sklearn(forest.estimators_),
                         np.concatenate([e.tree_.value[:, 0, :] for e in forest.estimators_]))
        rows = _check_rows(X.height, self.seed)
        engine_diff = _check_engine(self.model_name, self._proba_features(features[rows]),
                                    forest.predict_proba(features[rows]))
        del forest                                          # from here on only the numpy engine predicts
        weights = class_weights(codes, len(classes)) if class_weight else np.ones(len(classes))
        self.training_summary_ = {
            "records": X.height, "classes": {c: int((names == c).sum()) for c in classes},
            "class_weight": class_weight,
            "class_weights": dict(zip(classes, np.round(weights, 4).tolist())),
            "features": len(self.feature_names_), "dropped_constant": preprocessor.dropped_constant_,
            "trees": self.trees_.n_trees, "nodes": int(self.trees_.offsets[-1]),
            "max_tree_depth": int(self.trees_.node_depths().max()), "fit_seconds": round(seconds, 3),
            "engine_max_abs_diff": engine_diff, "engine_check_records": len(rows),
        }
        _info(self.verbose, f"{self.model_name}: {self.trees_.n_trees} trees, {int(self.trees_.offsets[-1]):,} nodes "
                            f"on {X.height:,} records ({len(classes)} classes) in {seconds:.1f}s")

    def _set_engine(self, trees: TreeEnsemble, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (int(trees.offsets[-1]), len(self.classes_)):
            raise ValueError(f"tree values have shape {value.shape}, expected "
                             f"({int(trees.offsets[-1])}, {len(self.classes_)})")
        self.trees_ = trees
        self.value_ = value                 # per node: class fractions (sklearn >= 1.4 stores them normalised)

    def _proba_features(self, features: np.ndarray) -> np.ndarray:
        leaves = self.trees_.apply(features)
        proba = np.zeros((len(features), self.value_.shape[1]), dtype=np.float64)
        for t in range(leaves.shape[1]):                # summed in tree order, as sklearn's forest does
            proba += self.value_[leaves[:, t]]
        proba /= leaves.shape[1]
        return proba

    def _predict_proba(self, X: pl.DataFrame) -> np.ndarray:
        return self._proba_features(self.preprocessor_.transform(X))

    def _state(self) -> dict:
        return {"classes": self.classes_, **self._feature_state(), "n_trees": self.trees_.n_trees,
                "n_nodes": int(self.trees_.offsets[-1])}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**self.trees_.tensors(), "value": torch.from_numpy(self.value_.copy())}

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.classes_ = list(state["classes"])
        self._restore_features(state)
        trees = TreeEnsemble.from_tensors(tensors)
        if trees.n_trees != state["n_trees"] or trees.n_features_in > len(self.feature_names_):
            raise ValueError("the saved trees do not match the model description")
        if tensors["value"].dtype != torch.float64:
            raise ValueError(f"tree values must be float64, found {tensors['value'].dtype}")
        self._set_engine(trees, tensors["value"].numpy())


# ===================================================================== isolation forest
@register
class IsolationForestDetector(BaseDetector):
    """scikit-learn's IsolationForest on the shared flow features, trained on benign records.

    The score is the isolation forest's anomaly score 2^(-E[path length] / c(max_samples)) in
    (0, 1], i.e. the negation of sklearn's `score_samples`: higher = more anomalous. The threshold
    is chosen on a benign validation split, like the autoencoders'.
    """

    model_name = "iforest"

    def __init__(self, n_estimators: int = 100, max_samples: int | float | str = "auto", max_features: float = 1.0,
                 bootstrap: bool = False, validation_fraction: float = 0.2, threshold_method: str = "percentile",
                 threshold_percentile: float = 99.0, threshold_fpr: float = 0.01,
                 threshold_value: float | None = None, clip: float = 3.0, n_jobs: int = -1, seed: int = 0,
                 split_seed: int | None = None, verbose: bool = True):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.validation_fraction = validation_fraction
        self.threshold_method = threshold_method
        self.threshold_percentile = threshold_percentile
        self.threshold_fpr = threshold_fpr
        self.threshold_value = threshold_value
        self.clip = clip
        self.n_jobs = n_jobs
        self.seed = seed
        self.split_seed = split_seed
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    _parameter_constraints = {
        **COMMON, **THRESHOLD, "validation_fraction": FRACTION, "n_estimators": [Interval(int, 1, MAX_TREES)],
        "max_samples": [Options(("auto",)), Interval(int, 1), _Fraction()],
        "max_features": [Interval(float, 0, 1, "right")], "bootstrap": [bool],
        "clip": [Interval(float, 0, None, "neither")], "n_jobs": [Interval(int)], "split_seed": [*SEED, None],
    }
    _fitted_attribute = "trees_"

    def validation_mask(self, n_benign: int) -> np.ndarray:
        """Benign training records held back for the threshold (drawn from split_seed, else seed)."""
        split_seed = getattr(self, "split_seed", None)
        return benign_validation_mask(n_benign, self.validation_fraction, self.seed if split_seed is None else split_seed)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> np.ndarray:
        """Train on the benign records of X (attack rows, when labelled, are left out and counted)."""
        import warnings

        from sklearn.ensemble import IsolationForest

        train_table, benign, n_attacks = benign_training_rows(X, y, minimum=3)
        is_val = self.validation_mask(train_table.height)
        fit_rows = train_table.filter(pl.Series(~is_val))
        preprocessor = fit_preprocessor(fit_rows, feature_columns(X), clip=self.clip)
        fit_features = preprocessor.transform(fit_rows)

        started = time.perf_counter()
        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                 max_features=self.max_features, bootstrap=self.bootstrap, n_jobs=self.n_jobs,
                                 random_state=self.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="max_samples .* is greater than")
            forest.fit(fit_features)
        seconds = time.perf_counter() - started
        n_features = fit_features.shape[1]
        # sklearn gives trees a column subset only when max_features < 1 (see its _compute_chunked_score_samples)
        per_tree = forest.estimators_features_ if forest._max_features != n_features else None

        self._use_preprocessor(preprocessor)
        self._set_engine(TreeEnsemble.from_sklearn(forest.estimators_, per_tree),
                         np.concatenate([e.tree_.n_node_samples for e in forest.estimators_]),
                         int(forest.max_samples_))
        rows = _check_rows(len(fit_features), self.seed)
        engine_diff = _check_engine(self.model_name, self._score_features(fit_features[rows]),
                                    -forest.score_samples(fit_features[rows]))
        del forest                                          # from here on only the numpy engine scores

        val_scores = self._score_features(preprocessor.transform(train_table.filter(pl.Series(is_val))))
        q = np.percentile(val_scores, [50, 90, 99, 100])
        self.training_summary_ = {
            "records": X.height, "benign_records": train_table.height, "attack_records_left_out": n_attacks,
            "train_records": int((~is_val).sum()), "validation_records": int(is_val.sum()),
            "labelled": benign is not None, "features": len(self.feature_names_),
            "dropped_constant": preprocessor.dropped_constant_, "trees": self.trees_.n_trees,
            "nodes": int(self.trees_.offsets[-1]), "max_samples": self.max_samples_,
            "fit_seconds": round(seconds, 3), "engine_max_abs_diff": engine_diff,
            "engine_check_records": len(rows),
            "validation_score_quantiles": {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                                           "max": float(q[3])},
        }
        _info(self.verbose, f"{self.model_name}: {self.trees_.n_trees} trees on {int((~is_val).sum()):,} benign "
                            f"records (left out {n_attacks:,} attack records) in {seconds:.1f}s")
        return val_scores

    def _set_engine(self, trees: TreeEnsemble, n_node_samples: np.ndarray, max_samples: int) -> None:
        n_node_samples = np.asarray(n_node_samples, dtype=np.int64)
        if n_node_samples.shape != (int(trees.offsets[-1]),):
            raise ValueError(f"n_node_samples has shape {n_node_samples.shape}, expected ({int(trees.offsets[-1])},)")
        self.trees_ = trees
        self.n_node_samples_ = n_node_samples
        self.max_samples_ = int(max_samples)
        # what one tree adds to a record's path length when the record ends in this node (a leaf):
        # its depth plus c(records left in the leaf), in sklearn's arithmetic ((depth + 1) + c - 1)
        self.leaf_path_ = (trees.node_depths() + 1.0) + average_path_length(n_node_samples) - 1.0
        self.denominator_ = trees.n_trees * float(average_path_length([self.max_samples_])[0])

    def _score_features(self, features: np.ndarray) -> np.ndarray:
        leaves = self.trees_.apply(features)
        depths = np.zeros(len(features), dtype=np.float64)
        for t in range(leaves.shape[1]):                # summed in tree order, as sklearn does
            depths += self.leaf_path_[leaves[:, t]]
        if self.denominator_ == 0:                      # a single training record: sklearn scores 1
            return np.ones(len(features))
        return 2.0 ** (-(depths / self.denominator_))

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return Scores(score=self._score_features(self.preprocessor_.transform(X)),
                      feature_names=list(self.feature_names_))

    def _state(self) -> dict:
        return {**self._feature_state(), "n_trees": self.trees_.n_trees,
                "n_nodes": int(self.trees_.offsets[-1]), "max_samples": self.max_samples_}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**self.trees_.tensors(), "n_node_samples": torch.from_numpy(self.n_node_samples_.copy())}

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self._restore_features(state)
        trees = TreeEnsemble.from_tensors(tensors)
        if trees.n_trees != state["n_trees"] or trees.n_features_in > len(self.feature_names_):
            raise ValueError("the saved trees do not match the model description")
        self._set_engine(trees, tensors["n_node_samples"].numpy(), state["max_samples"])
