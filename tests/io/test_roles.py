"""Column roles on real records: a UNSW-NB15-shaped table, the CIC layouts, the user's choice."""

import numpy as np
import polars as pl
import pytest

from deepids.errors import ConfigError, SchemaError
from deepids.features.preprocess import UNSEEN, FlowPreprocessor, feature_columns
from deepids.io import read_flows
from deepids.io.roles import column_roles, select_columns
from deepids.io.schema import FLOW_FEATURES


@pytest.fixture(scope="module")
def unsw(unsw_shaped_csv):
    return read_flows(unsw_shaped_csv, layout="generic", label_column="attack_cat")[0]


def _roles(df, **kw):
    return {r.column: r for r in column_roles(df, **kw)}


def test_unsw_shaped_table_neither_id_nor_second_label_is_a_feature(unsw):
    roles = _roles(unsw)
    assert roles["id"].role == "identifier" and "id" in roles["id"].reason
    assert roles["label.1"].role == "excluded" and "label-like" in roles["label.1"].reason   # the 0/1 column
    assert roles["label"].role == "label"
    for c in ("proto", "service", "state"):
        assert roles[c].role == "feature" and "categorical" in roles[c].reason
    features = feature_columns(unsw)
    assert "id" not in features and "label.1" not in features and "label" not in features
    assert {"proto", "service", "state", "dur", "sbytes", "dbytes"} <= set(features)


def test_identifiers_found_by_their_data_not_only_their_names(unsw):
    table = unsw.rename({"id": "n"}).with_columns(
        pl.format("conn-{}", pl.col("n")).alias("conn"), pl.lit(7.0).alias("sensor"))
    roles = _roles(table)
    assert roles["n"].role == "identifier" and "monotone integer index" in roles["n"].reason
    assert roles["conn"].role == "identifier" and "unique to every row" in roles["conn"].reason
    assert roles["sensor"].role == "excluded" and "constant" in roles["sensor"].reason
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=1)     # a shuffled counter is no index
    assert _roles(shuffled)["n"].role == "feature"


def test_cic_features_keep_their_roles(flow_sample):
    roles = _roles(flow_sample)
    assert feature_columns(flow_sample) == [c for c in FLOW_FEATURES if c in flow_sample.columns]
    assert roles["dst_port"].role == "metadata"
    assert roles["label"].role == "label"


def test_the_user_chooses_features(unsw):
    kept = select_columns(unsw, feature_columns=["dur", "proto", "sbytes"])
    assert feature_columns(kept) == ["dur", "proto", "sbytes"] and "label" in kept.columns
    dropped = select_columns(unsw, drop_columns=["service"])
    assert "service" not in dropped.columns
    assert _roles(unsw, drop_columns=["service"])["service"].reason.startswith("dropped")
    with pytest.raises(ConfigError, match="no column 'nope'"):
        column_roles(unsw, drop_columns=["nope"])
    with pytest.raises(ConfigError, match="cannot be a feature: it is identifier"):
        column_roles(unsw, feature_columns=["id", "dur"])


def test_categories_one_hot_with_an_unseen_slot_and_roles_saved(unsw):
    pre = FlowPreprocessor().fit(unsw, feature_columns(unsw))
    names = pre.output_names
    assert f"proto={UNSEEN}" in names and "proto=tcp" in names and f"state={UNSEEN}" in names
    saved = {r["column"]: r["role"] for r in pre.to_dict()["roles_"]}
    assert saved["id"] == "identifier" and saved["label.1"] == "excluded" and saved["proto"] == "feature"
    again = FlowPreprocessor.from_dict(pre.to_dict())
    odd = unsw.head(2).with_columns(pl.lit("sctp").alias("proto"))      # a protocol training never saw
    x = again.transform(odd)
    assert np.all(x[:, names.index(f"proto={UNSEEN}")] == 1.0)
    np.testing.assert_array_equal(again.transform(unsw.head(50)), pre.transform(unsw.head(50)))


def test_scoring_a_file_whose_columns_disagree_is_a_clear_error(unsw):
    pre = FlowPreprocessor().fit(unsw, feature_columns(unsw))
    with pytest.raises(SchemaError, match="lacks 1 column"):
        pre.transform(unsw.drop("dur"))
    with pytest.raises(SchemaError, match="'sbytes' held numbers .* hold text"):
        pre.transform(unsw.with_columns(pl.col("sbytes").cast(pl.Utf8)))
