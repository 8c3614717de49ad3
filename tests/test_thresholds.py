import numpy as np
import pytest

from deepids.errors import ConfigError
from deepids.thresholds import Threshold, calibrate_threshold, threshold_best_f1, threshold_fpr, threshold_percentile


def test_percentile_threshold_leaves_that_share_above():
    s = np.arange(1000, dtype=float)
    t = threshold_percentile(s, 99)
    assert (s > t.value).mean() == pytest.approx(0.01, abs=0.002)
    assert t.method == "percentile" and t.params == {"percentile": 99} and t.n_scores == 1000


def test_fpr_threshold_meets_the_target_rate():
    rng = np.random.default_rng(0)
    s = rng.exponential(size=5000)
    for target in (0.001, 0.01, 0.05):
        t = threshold_fpr(s, target)
        assert (s > t.value).mean() <= target
        assert (s >= t.value).mean() > target - 1 / len(s)


def test_best_f1_separates_separable_scores():
    scores = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 10)]
    y = np.r_[np.zeros(50), np.ones(10)]
    t = threshold_best_f1(scores, y)
    assert 1 <= t.value <= 2 and t.params["f1"] == 1.0


def test_fixed_and_round_trip():
    t = calibrate_threshold("fixed", value=0.1)
    assert Threshold.from_dict(t.to_dict()) == t and t.value == 0.1


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "fixed"}, "needs a value"),
    ({"method": "percentile", "benign_scores": np.ones(3), "percentile": 120}, r"in \(0, 100\]"),
    ({"method": "best-f1", "scores": np.ones(4), "y": np.zeros(4)}, "both benign and attack"),
    ({"method": "magic", "benign_scores": np.ones(3)}, "unknown threshold method"),
    ({"method": "percentile", "benign_scores": np.array([np.nan])}, "no finite scores"),
])
def test_bad_threshold_requests_are_clear(kwargs, message):
    method = kwargs.pop("method")
    with pytest.raises(ConfigError, match=message):
        calibrate_threshold(method, kwargs.pop("benign_scores", None), **kwargs)
