"""Scoring helpers: read-ahead of chunks, and the top-features column."""

import numpy as np
import polars as pl
import pytest

from deepids.models.base import Scores
from deepids.scoring import prefetch, top_feature_series


def test_prefetch_keeps_order_and_raises_the_readers_error_in_place():
    assert list(prefetch(iter(range(7)))) == list(range(7))

    def reader():
        yield "first"
        raise ValueError("bad file")

    seen = []
    with pytest.raises(ValueError, match="bad file"):
        for item in prefetch(reader()):
            seen.append(item)
    assert seen == ["first"]
    stopped = prefetch(iter(range(1000)))
    assert next(stopped) == 0
    stopped.close()                      # the reader thread ends with the consumer


def test_top_feature_series_matches_a_full_sort():
    rng = np.random.default_rng(0)
    errors = rng.random((500, 12)).astype(np.float32)
    names = [f"f{i}" for i in range(12)]
    scores = Scores(score=errors.mean(axis=1), feature_error=errors, feature_names=names)
    expected = np.asarray(names, dtype=object)[np.argsort(-errors, axis=1)[:, :3]].tolist()
    series = top_feature_series(scores, 3)
    assert series.dtype == pl.List(pl.Utf8) and series.to_list() == expected == scores.top_features(3)
    assert top_feature_series(scores, 50).to_list()[0] == np.asarray(names)[np.argsort(-errors[0])].tolist()
    assert top_feature_series(Scores(score=np.zeros(4)), 3).to_list() == [[]] * 4
