"""The leakage guard and training-row fingerprints, on real records."""

import logging

import numpy as np
import polars as pl
import pytest

from deepids.datasets import holdout_split
from deepids.features.leakage import (LeakageError, check_leakage, count_seen, find_leaks, load_fingerprints,
                                      row_fingerprints, save_fingerprints)
from deepids.features.preprocess import feature_columns
from deepids.io import read_flows
from deepids.io.schema import BENIGN, LABEL

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unsw(unsw_shaped_csv):
    return read_flows(unsw_shaped_csv, layout="generic", label_column="attack_cat")[0]


def test_real_features_raise_no_alarm(flow_sample, ids2018_sample, unsw):
    assert find_leaks(flow_sample) == []
    assert find_leaks(ids2018_sample) == []
    assert find_leaks(unsw) == []            # the 0/1 label column is no feature, so it cannot leak


def test_a_planted_copy_of_the_label_is_named_before_training(unsw, caplog):
    attack = (unsw["label"] != BENIGN).cast(pl.Float64)
    planted = unsw.with_columns(attack.alias("x_flag"),                                  # a 0/1 copy
                                pl.col("label").cast(pl.Categorical).to_physical().cast(pl.Float64).alias("code"))
    findings = {f.column: f for f in find_leaks(planted)}
    assert set(findings) == {"x_flag", "code"}
    assert findings["code"].kind == "relabelling" and findings["x_flag"].kind == "separates"
    with caplog.at_level(logging.WARNING, logger="deepids.features.leakage"):
        check_leakage(planted)
    assert "x_flag" in caplog.text and "possible label leak" in caplog.text
    with pytest.raises(LeakageError, match="'x_flag'"):
        check_leakage(planted, strict=True)


def test_a_near_perfect_single_cut_is_reported(flow_sample):
    # a real feature shifted far out for attack rows only: one cut separates all but the noise
    attack = (flow_sample["label"] != BENIGN).to_numpy()
    shifted = flow_sample["Flow Duration"].to_numpy() + np.where(attack, 1e12, 0.0)
    table = flow_sample.with_columns(pl.Series("duration_copy", shifted))
    assert [f.column for f in find_leaks(table)] == ["duration_copy"]


def test_fingerprints_count_test_rows_seen_in_training(flow_sample, tmp_path):
    train, test = holdout_split(flow_sample, seed=0)
    columns = feature_columns(train)
    save_fingerprints(tmp_path, train, columns)
    hashes, saved_columns = load_fingerprints(tmp_path)
    assert saved_columns == columns
    assert count_seen(hashes, train, columns) == train.height
    key = pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("-") for c in columns], separator="|")
    seen = test.select(key.alias("k"))["k"].is_in(train.select(key.alias("k"))["k"].implode())
    assert count_seen(hashes, test, columns) == int(seen.sum()) > 0
    # stable: the same values hash alike in any order, and a changed value hashes apart
    again = row_fingerprints(test.reverse(), columns)[::-1]
    np.testing.assert_array_equal(again, row_fingerprints(test, columns))
    changed = test.with_columns(pl.col("Flow Duration") + 1)
    assert not np.any(row_fingerprints(changed, columns) == row_fingerprints(test, columns))
    assert load_fingerprints(tmp_path / "none") is None


def test_supervised_accuracy_is_what_it_honestly_is(unsw):
    from deepids.models import DNNClassifier

    train, test = holdout_split(unsw, seed=0)
    model = DNNClassifier(epochs=30, verbose=False).fit(train)
    assert "id" not in model.input_columns_ and "label.1" not in model.input_columns_
    y = (test["label"] != BENIGN).to_numpy().astype(int)
    accuracy = float((model.predict(test) == y).mean())
    # the same model on the table with the identifier and the 0/1 column removed by hand
    clean = DNNClassifier(epochs=30, verbose=False).fit(train.drop("id", "label.1"))
    np.testing.assert_array_equal(clean.predict(test), model.predict(test))
    # measured 0.962; with the 0/1 column renamed so that the roles miss it (a leak): 1.000
    assert 0.90 <= accuracy < 0.995, accuracy


def test_stream_sample_is_uniform_over_chunks_and_keeps_file_order():
    from deepids.features.leakage import stream_sample

    table = pl.DataFrame({"x": np.arange(10_000), LABEL: np.where(np.arange(10_000) < 9_000, BENIGN, "DoS")})
    chunks = [(table.slice(i, 1_000), None) for i in range(0, 10_000, 1_000)]
    first, sample = stream_sample(iter(chunks), rows=2_000, seed=0)
    assert first.equals(table.head(1_000))
    x = sample.get_column("x").to_numpy()
    assert len(x) == 2_000 and len(np.unique(x)) == 2_000 and (np.diff(x) > 0).all()
    assert 120 < (x >= 9_000).sum() < 280           # the last chunk's attacks are in it (10 % of rows)
    assert sample.columns == table.columns
    assert stream_sample(iter([]), rows=10) == (None, None)
