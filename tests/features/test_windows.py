import numpy as np
import polars as pl

from deepids.features import EntityHistory, window_order, windows_by_entity


def _table():
    # two entities interleaved in file order, timestamps out of file order for entity "a"
    return pl.DataFrame({
        "src_ip": ["a", "b", "a", "a", "b", "a"],
        "timestamp": pl.Series([3, 1, 1, 2, 2, 4]).cast(pl.Datetime("us")),
        "x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    })


def test_windows_follow_entity_and_time_and_pad_with_first_record():
    df = _table()
    codes, order = window_order(df, "src_ip")
    idx = windows_by_entity(codes, order, 3)
    # entity a in time order: rows 2 (t1), 3 (t2), 0 (t3), 5 (t4)
    assert idx[2].tolist() == [2, 2, 2]
    assert idx[3].tolist() == [2, 2, 3]
    assert idx[0].tolist() == [2, 3, 0]
    assert idx[5].tolist() == [3, 0, 5]
    # entity b: rows 1 (t1), 4 (t2)
    assert idx[1].tolist() == [1, 1, 1]
    assert idx[4].tolist() == [1, 1, 4]


def test_without_entity_or_time_windows_slide_over_file_order():
    df = pl.DataFrame({"x": np.arange(5.0)})
    codes, order = window_order(df, None)
    idx = windows_by_entity(codes, order, 2)
    assert idx.tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]


def test_every_record_gets_exactly_one_window_ending_at_it():
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"src_ip": rng.choice(list("abcdefg"), 500).tolist(), "x": rng.random(500)})
    codes, order = window_order(df, "src_ip")
    idx = windows_by_entity(codes, order, 10)
    assert idx.shape == (500, 10)
    assert (idx[:, -1] == np.arange(500)).all()
    ent = df["src_ip"].to_numpy()
    assert (ent[idx] == ent[:, None]).all()          # a window never mixes entities


def test_chunked_history_gives_the_same_windows_as_the_whole_table():
    rng = np.random.default_rng(1)
    n, T = 400, 5
    ents = rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"], n)
    X = rng.random((n, 3)).astype(np.float32)
    df = pl.DataFrame({"src_ip": ents.tolist()})
    codes, order = window_order(df, "src_ip")
    whole = X[windows_by_entity(codes, order, T)]
    history = EntityHistory(T)
    parts = []
    for start in range(0, n, 37):
        chunk = df[start:start + 37]
        _, corder = window_order(chunk, "src_ip")
        matrix, idx = history.windows(X[start:start + 37], ents[start:start + 37], corder)
        parts.append(matrix[idx])
    np.testing.assert_array_equal(np.concatenate(parts), whole)
