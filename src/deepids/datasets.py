"""The real samples bundled with the repository, and the held-out split every comparison uses.

A library room: the demo, the benchmark, the bench and the tests read samples and split them
here, so nothing below the command line imports the demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from deepids.errors import InputError

SAMPLE = Path("cicids2017") / "cicids2017_sample.csv.gz"
CROSS = Path("cse-cic-ids2018") / "ids2018_sample.csv.gz"


def samples_dir() -> Path:
    """The bundled samples: ./data/samples when run from a checkout, else next to the source tree."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "data" / "samples"
        if (candidate / SAMPLE).exists():
            return candidate
    raise InputError("the bundled samples (data/samples) were not found; run the demo from the deepids checkout")


def holdout_split(table: pl.DataFrame, test_fraction: float = 0.3, seed: int = 42) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stratified by label: every attack kind appears in both parts when it can."""
    from sklearn.model_selection import train_test_split

    labels = table.get_column("label").to_numpy()
    counts = dict(zip(*np.unique(labels, return_counts=True)))
    commonest = max(counts, key=counts.get)     # a label seen once cannot be split: it goes with the commonest
    strata = np.array([lab if counts[lab] >= 2 else commonest for lab in labels], dtype=object)
    train_idx, test_idx = train_test_split(np.arange(table.height), test_size=test_fraction, random_state=seed,
                                           stratify=strata)
    return table[np.sort(train_idx)], table[np.sort(test_idx)]
