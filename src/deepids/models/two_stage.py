"""Two stages: stage one flags records, then a classifier names the attack family of what it flagged.

Stage one (`stage_one`):
- ``"hybrid"`` (the default): the `detector` (a binary DNN by default) *or* a strict novelty
  check, the distance to the nearest benign training record in the detector's feature space
  above its `anomaly_quantile` (0.998) on held-back benign records. It catches more of the
  attack families training never showed (on the CICIDS2017 sample, leaving one family out:
  20.4 % of its flows flagged on average against 11.8 %), named `unknown-anomaly`;
- ``"supervised"``: the `detector` alone (any model that flags records, such as the LSTM
  autoencoder, works too).

Stage two is a family classifier (the DNN by default) trained on labelled attack records only,
so it answers "which attack", not "whether". A flagged record comes out as `unknown-anomaly`
rather than a forced guess when the novelty check (`novelty`) says it resembles no family the
classifier knows:
- ``"embedding"`` (the default): its distance to the nearest training attack in the
  classifier's last hidden layer is above the `novelty_quantile` (0.99) of held-back attacks;
- ``"confidence"``: the classifier's largest class probability is below `min_confidence`.

The defaults are what `bench/two_stage.py --seeds 0,1,2` chose on the validation splits of the
training part of three splits (rule and figures in docs/RESULTS.md): on the held-out CICIDS2017
split they reach attack-family macro-F1 0.964. `validation_fraction` of the training records (0.2) are held
back from the novelty references and stage two to calibrate both novelty thresholds; stage
one trains on all. Both references are fitted whatever the options, so `stage_one` and
`novelty` can be switched on a fitted model. The score and threshold are stage one's (for the
hybrid, a score above the threshold when either part flags); `Scores.predicted` holds the
final names ("benign", a family, or "unknown-anomaly").
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from deepids.errors import ConfigError, SchemaError
from deepids.features.families import UNKNOWN_ANOMALY, attack_families
from deepids.io.schema import BENIGN, LABEL
from deepids.models.base import BaseDetector, FitOptions, Scores, embed_members, member_tensors
from deepids.models.novelty import NearestReference, classifier_embedding
from deepids.models.params import COMMON, FRACTION, Interval, Options
from deepids.models.registry import MODELS, model_class, model_from_document, register
from deepids.thresholds import Threshold

STAGE_ONE = ("supervised", "hybrid")
NOVELTY = ("embedding", "confidence")


@register
class TwoStageDetector(BaseDetector):
    model_name = "two-stage"
    _parameter_constraints = {**COMMON, "detector": [str], "classifier": [str],
                              "min_confidence": [Interval(float, 0, 1)], "detector_params": [dict, None],
                              "classifier_params": [dict, None], "stage_one": [Options(STAGE_ONE)],
                              "novelty": [Options(NOVELTY)], "anomaly_quantile": FRACTION,
                              "novelty_quantile": FRACTION, "validation_fraction": FRACTION,
                              "max_reference": [Interval(int, 1, 10_000_000)]}
    _fitted_attribute = "classifier_"

    def __init__(self, detector: str = "dnn", classifier: str = "dnn", stage_one: str = "hybrid",
                 novelty: str = "embedding", min_confidence: float = 0.6, anomaly_quantile: float = 0.998,
                 novelty_quantile: float = 0.99, validation_fraction: float = 0.2, max_reference: int = 10_000,
                 detector_params: dict | None = None, classifier_params: dict | None = None,
                 seed: int = 0, device: str | None = None, verbose: bool = True):
        self.detector = detector
        self.classifier = classifier
        self.stage_one = stage_one
        self.novelty = novelty
        self.min_confidence = min_confidence
        self.anomaly_quantile = anomaly_quantile
        self.novelty_quantile = novelty_quantile
        self.validation_fraction = validation_fraction
        self.max_reference = max_reference
        self.detector_params = detector_params
        self.classifier_params = classifier_params
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    def _stages(self) -> tuple[BaseDetector, BaseDetector]:
        """Unfitted stage one and stage two, built from their names and parameters."""
        from deepids.models.supervised import BaseClassifier

        def build(name: str, params: dict) -> BaseDetector:
            cls = model_class(name)
            common = {k: getattr(self, k) for k in ("seed", "device", "verbose") if k in cls._param_names()}
            try:
                return cls(**{**common, **params})
            except TypeError as exc:         # a parameter the stage's model does not take
                raise ConfigError(f"two-stage: {name}: {exc}") from None

        detector = build(self.detector, self.detector_params or {})
        classifier = build(self.classifier, {"target": "family", **(self.classifier_params or {})})
        if not isinstance(classifier, BaseClassifier):
            choices = ", ".join(n for n, c in MODELS.items() if issubclass(c, BaseClassifier))
            raise ConfigError(f"stage two must be a classifier ({choices}), not {self.classifier!r}")
        return detector, classifier

    def _validate_params(self) -> None:
        super()._validate_params()
        for stage in self._stages():
            stage._validate_params()

    def _check_training_data(self, X: pl.DataFrame, y=None) -> None:
        if y is None and LABEL not in X.columns:
            raise SchemaError("the two-stage model needs labels: stage two learns attack families "
                              "(name the label column with --label-column)")
        self._stages()[0]._check_training_data(X, y)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> None:
        if y is not None:
            X = X.with_columns(pl.Series(LABEL, np.asarray(y, dtype=object).astype(str)))
        self.detector_, classifier = self._stages()
        # a detector learns benign traffic; a binary classifier both classes
        self.detector_.fit(X, **options.sub("stage1").as_kwargs())
        # held back from stage two and the novelty references, to calibrate the novelty thresholds
        is_val = np.random.default_rng(self.seed).random(X.height) < self.validation_fraction
        benign = (X.get_column(LABEL) == BENIGN).to_numpy()
        attacks = X.filter(pl.Series(~benign & ~is_val))
        families = sorted(set(attack_families(X.filter(pl.Series(~benign)).get_column(LABEL).to_numpy()).tolist()))
        if len(families) < 2:
            raise SchemaError(f"stage two needs at least two attack families to tell apart, got {families}")
        self.classifier_ = classifier.fit(attacks, **options.sub("stage2").as_kwargs())
        self._fit_novelty(X.filter(pl.Series(benign & ~is_val)), X.filter(pl.Series(benign & is_val)),
                          attacks, X.filter(pl.Series(~benign & is_val)))
        self.training_summary_ = {"records": X.height, "attack_records": int((~benign).sum()),
                                  "held_back_for_novelty": int(is_val.sum()), "families": families,
                                  "novelty": self._novelty_summary(),
                                  "stage_one": self.detector_.training_summary_,
                                  "stage_two": self.classifier_.training_summary_}

    def _fit_novelty(self, benign_fit, benign_val, attack_fit, attack_val) -> None:
        """References and thresholds of both novelty checks, calibrated on held-back records."""
        pre = getattr(self.detector_, "preprocessor_", None)
        self.benign_reference_ = None
        if pre is not None and benign_fit.height and benign_val.height:
            self.benign_reference_ = NearestReference.fit(pre.transform(benign_fit), pre.transform(benign_val),
                                                          self.anomaly_quantile, max_reference=self.max_reference,
                                                          seed=self.seed)
        self.attack_reference_ = None
        if attack_val.height:
            self.attack_reference_ = NearestReference.fit(
                classifier_embedding(self.classifier_, attack_fit), classifier_embedding(self.classifier_, attack_val),
                self.novelty_quantile, max_reference=self.max_reference, seed=self.seed)
        if self.stage_one == "hybrid" and self.benign_reference_ is None:
            raise ConfigError(f"the hybrid stage one needs a detector with fitted features and benign records "
                              f"held back; {self.detector!r} has none (use --stage-one supervised, "
                              f"stage_one='supervised' in Python)")

    def _novelty_summary(self) -> dict:
        out = {}
        for name, ref in (("benign", self.benign_reference_), ("attack", self.attack_reference_)):
            if ref is not None:
                out[name] = ref.to_state()
        return out

    def _uncalibrated_threshold(self) -> Threshold:
        return self.detector_.threshold_            # the score and its threshold are stage one's

    # ---------------------------------------------------------------- scoring
    def _flagged(self, X: pl.DataFrame, stage_one: Scores) -> Scores:
        """Stage one's verdict: the detector's, or (hybrid) the detector's or the benign novelty's."""
        t = self.threshold_.value
        if self.stage_one == "hybrid" and self.benign_reference_ is not None:
            d = self.benign_reference_.distances(self.detector_.preprocessor_.transform(X))
            ratio = d / max(self.benign_reference_.threshold, 1e-12)
            # above t exactly when either part flags: t + (ratio - 1) > t <=> novel
            stage_one.score = np.maximum(stage_one.score, t + (ratio - 1.0)).astype(np.float32)
        return stage_one

    def _names(self, X: pl.DataFrame, flagged: np.ndarray) -> np.ndarray:
        names = np.full(X.height, BENIGN, dtype=object)
        if flagged.any():
            rows = X.filter(pl.Series(flagged))
            proba = self.classifier_.predict_proba(rows)
            best = proba.argmax(axis=1)
            named = np.asarray(self.classifier_.classes_, dtype=object)[best]
            if self.novelty == "embedding" and self.attack_reference_ is not None:
                unknown = self.attack_reference_.is_novel(classifier_embedding(self.classifier_, rows))
            else:
                unknown = proba[np.arange(len(best)), best] < self.min_confidence
            names[flagged] = np.where(unknown, UNKNOWN_ANOMALY, named)
        return names

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return self._with_names(X, self.detector_.score_records(X))

    def _score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        return self._with_names(X, self.detector_.score_chunk(X, history))

    def _with_names(self, X: pl.DataFrame, stage_one: Scores) -> Scores:
        scores = self._flagged(X, stage_one)
        scores.predicted = self._names(X, scores.score > self.threshold_.value)
        return scores

    def new_history(self):
        self._check_fitted()
        return self.detector_.new_history()

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict:
        return {"stages": embed_members([self.detector_, self.classifier_])[0], "novelty": self._novelty_summary()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = embed_members([self.detector_, self.classifier_])[1]
        for name, ref in (("benign", self.benign_reference_), ("attack", self.attack_reference_)):
            if ref is not None:
                tensors[f"novelty.{name}"] = torch.from_numpy(ref.reference)
        return tensors

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.detector_, self.classifier_ = [model_from_document(doc, member_tensors(tensors, k), f"stage {k + 1}")
                                            for k, doc in enumerate(state["stages"])]
        novelty = state.get("novelty")
        if novelty is None:          # saved before the novelty checks existed: what it did then
            self.stage_one, self.novelty = "supervised", "confidence"
            novelty = {}
        self.benign_reference_, self.attack_reference_ = [
            NearestReference.from_state(novelty[name], tensors[f"novelty.{name}"]) if name in novelty else None
            for name in ("benign", "attack")]
