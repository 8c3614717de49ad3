"""Entity context: the same values at once, in chunks and record by record; bounded state."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from deepids.features.context import CONTEXT_FEATURES, EntityContext
from deepids.io.connlogs import read_conn
from deepids.models import load_model
from deepids.models.context import ContextDetector
from deepids.serving.scorer import LiveScorer


@pytest.fixture(scope="module")
def flows(samples_dir):
    return read_conn(samples_dir / "nfdump" / "lab_slice_nfdump.csv.gz")[0]


def _ctx(table: pl.DataFrame) -> np.ndarray:
    return table.select(CONTEXT_FEATURES).to_numpy()


def test_once_in_chunks_and_one_by_one_agree(flows):
    ctx = EntityContext(window_seconds=30, last_flows=10).fit(flows)
    whole = _ctx(ctx.transform(flows, ctx.new_state()))
    state = ctx.new_state()
    chunks = np.concatenate([_ctx(ctx.transform(flows.slice(i, 173), state)) for i in range(0, flows.height, 173)])
    state = ctx.new_state()
    single = np.concatenate([_ctx(ctx.transform(flows.slice(i, 1), state)) for i in range(0, 400)])
    np.testing.assert_array_equal(chunks, whole)
    np.testing.assert_array_equal(single, whole[:400])
    assert np.isfinite(whole).all()


def test_the_scan_shows_in_the_context(flows):
    ctx = EntityContext().fit(flows)
    out = ctx.transform(flows, ctx.new_state())
    scan = out.filter(pl.col("label") == "PortScan")
    benign = out.filter(pl.col("label") == "benign")
    # a port scan: many distinct ports in the window, and most of its recent flows failed
    assert scan["ctx_dst_ports_window"].median() > 20 * benign["ctx_dst_ports_window"].median()
    assert scan["ctx_failed_last"].median() > 0.9 > benign["ctx_failed_last"].median()


def test_state_is_bounded_under_many_sources(flows):
    # every record from its own source address: the LRU bound holds and evictions are counted
    many = flows.with_columns((pl.lit("10.9.") + pl.int_range(pl.len()).cast(pl.Utf8)).alias("src_ip"))
    ctx = EntityContext(max_entities=50, idle_ttl=None).fit(many)
    state = ctx.new_state()
    ctx.transform(many, state)
    assert len(state) == 50 and state.evicted_lru == many.height - 50
    # record-time TTL: an entity idle longer than idle_ttl is forgotten, whatever the count
    ctx = EntityContext(max_entities=None, idle_ttl=5.0).fit(flows)
    state = ctx.new_state()
    ctx.transform(flows, state)
    assert state.evicted_idle > 0 and len(state) < flows["src_ip"].n_unique()


def test_detector_with_context_scores_batch_chunks_stream_and_reloaded_alike(flows, tmp_path):
    model = ContextDetector(detector_params=dict(epochs=2, sequence_length=4, verbose=False, seed=0),
                            window_seconds=30, last_flows=10)
    model.fit(flows)
    whole = model.score_records(flows).score
    history = model.new_history()
    chunks = np.concatenate([model.score_chunk(flows.slice(i, 211), history).score
                             for i in range(0, flows.height, 211)])
    np.testing.assert_allclose(chunks, whole, rtol=1e-6, atol=1e-7)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.score_records(flows).score, whole)
    # the live scorer (serve, stream) with records arriving as JSON, a few at a time
    live = LiveScorer(again)
    items = flows.drop("label").with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f")).to_dicts()
    got = np.concatenate([live.score(items[i:i + 7]).score for i in range(0, 350, 7)])
    np.testing.assert_allclose(got, whole[:350], rtol=1e-6, atol=1e-7)
