import json

import numpy as np
import polars as pl
import pytest

from deepids.errors import SchemaError
from deepids.features import FlowPreprocessor, feature_columns, signed_log1p


def test_signed_log1p_keeps_sign_and_order():
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1e12])
    y = signed_log1p(x)
    assert (np.diff(y) > 0).all() and y[2] == 0 and y[0] == pytest.approx(-np.log1p(1000.0))


def test_fit_on_real_flows_handles_inf_nan_and_constants(flow_sample):
    pp = FlowPreprocessor().fit(flow_sample)
    Z = pp.transform(flow_sample)
    assert Z.dtype == np.float32 and Z.shape == (flow_sample.height, pp.n_outputs)
    assert np.isfinite(Z).all()
    assert np.abs(Z).max() <= pp.clip
    # CICIDS2017 has columns that are always zero (e.g. the bulk rates): dropped, and recorded
    assert "Bwd Avg Bulk Rate" in pp.dropped_constant_
    assert "Bwd Avg Bulk Rate" not in pp.output_names
    # identifiers never become features, except the frequency/port encodings
    assert not {"src_ip", "dst_ip", "flow_id", "timestamp", "label"} & set(pp.output_names)


def test_fitted_state_comes_from_training_rows_only(flow_sample):
    train, test = flow_sample[:4000], flow_sample[4000:]
    pp = FlowPreprocessor().fit(train)
    doubled = test.with_columns(pl.col("Flow Duration") * 1000)
    # transforming other data must not change the fitted state
    before = json.dumps(pp.to_dict())
    pp.transform(doubled)
    assert json.dumps(pp.to_dict()) == before
    col = pp.output_names.index("Flow Duration")
    assert pp.transform(doubled)[:, col].mean() > pp.transform(test)[:, col].mean()


def test_json_round_trip_gives_identical_output(flow_sample):
    pp = FlowPreprocessor().fit(flow_sample)
    again = FlowPreprocessor.from_dict(json.loads(json.dumps(pp.to_dict())))
    np.testing.assert_array_equal(pp.transform(flow_sample), again.transform(flow_sample))


def test_categorical_columns_one_hot_with_unseen_slot():
    df = pl.DataFrame({"service": ["http", "ftp", "http", "smtp"], "bytes": [1.0, 2.0, 3.0, 4.0]})
    pp = FlowPreprocessor().fit(df)
    Z = pp.transform(pl.DataFrame({"service": ["telnet"], "bytes": [2.0]}))
    unseen = pp.output_names.index("service=<unseen>")
    assert Z[0, unseen] == 1.0 and Z[0, :].sum() - Z[0, 0] == 1.0


def test_missing_columns_are_named():
    pp = FlowPreprocessor().fit(pl.DataFrame({"a": [1.0, 2.0], "b": [3.0, 1.0]}))
    with pytest.raises(SchemaError, match="lacks 1 column.*'b'"):
        pp.transform(pl.DataFrame({"a": [1.0]}))


def test_feature_columns_skip_metadata_and_label(flow_sample):
    cols = feature_columns(flow_sample)
    assert "label" not in cols and "dst_port" not in cols and "Flow Duration" in cols


def _numpy_transform(pp: FlowPreprocessor, df: pl.DataFrame) -> np.ndarray:
    """The steps as the module docstring states them, in numpy float64 (the former implementation)."""
    from deepids.features.preprocess import _fill

    raw = pp._raw_matrix(df, pp.numeric_)
    filled = _fill(raw, np.asarray(pp.fill_nan_), np.asarray(pp.fill_posinf_), np.asarray(pp.fill_neginf_))
    z = (signed_log1p(filled) - np.asarray(pp.mean_)) / np.asarray(pp.std_)
    return np.clip(z, -pp.clip, pp.clip).astype(np.float32)


def test_transform_matches_the_stated_steps_with_inf_nan_and_nulls(flow_sample):
    pp = FlowPreprocessor().fit(flow_sample[:5000])
    rows = flow_sample[5000:]
    # real rows, with the awkward values CICFlowMeter writes put into a few cells
    wild = rows.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(float("inf")).otherwise(pl.col("Flow Bytes/s")).alias("Flow Bytes/s"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(float("-inf")).otherwise(pl.col("Flow IAT Min")).alias("Flow IAT Min"),
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(float("nan")).otherwise(pl.col("Flow Packets/s")).alias("Flow Packets/s"),
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(None).otherwise(pl.col("Flow Duration")).alias("Flow Duration"),
    )
    for df in (rows, wild):
        np.testing.assert_allclose(pp.transform(df)[:, :len(pp.numeric_)], _numpy_transform(pp, df), rtol=1e-6, atol=1e-6)
