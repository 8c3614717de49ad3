"""Label normalisation: scalar, Series and expression versions agree, on real spellings."""

from __future__ import annotations

import gzip

import polars as pl
import pytest

from deepids.io.labels import normalise_label, normalise_label_expr, normalise_labels
from deepids.io.schema import BENIGN

CASES = [
    ("BENIGN", BENIGN),
    ("Benign", BENIGN),
    ("benign", BENIGN),
    ("normal", BENIGN),                                    # NSL-KDD
    ("  BENIGN\t", BENIGN),
    ("Web Attack \ufffd Brute Force", "Web Attack - Brute Force"),  # byte 0x96 decoded as U+FFFD
    ("Web Attack \x96 XSS", "Web Attack - XSS"),                    # 0x96 as U+0096 (GeneratedLabelledFlows)
    ("Web Attack \u2013 Sql Injection", "Web Attack - Sql Injection"),  # en dash
    ("Web Attack - XSS", "Web Attack - XSS"),
    ("Web Attack Brute Force", "Web Attack - Brute Force"),         # separator lost
    ("Web Attack \u00ef\u00bf\u00bd Brute Force", "Web Attack - Brute Force"),  # U+FFFD read as latin-1
    ("Web Attack  \x96  Sql Injection", "Web Attack - Sql Injection"),
    ("DoS Hulk", "DoS Hulk"),
    ("DoS  Hulk ", "DoS Hulk"),                             # repeated whitespace collapses
    ("Infilteration", "Infilteration"),                    # kept as CSE-CIC-IDS2018 spells it
    ("DDOS attack-HOIC", "DDOS attack-HOIC"),
    ("neptune", "neptune"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalise_label(raw: str, expected: str) -> None:
    assert normalise_label(raw) == expected


def test_series_and_expression_agree_with_scalar() -> None:
    raw = pl.Series("label", [r for r, _ in CASES] + [None])
    expected = [e for _, e in CASES] + [None]
    assert normalise_labels(raw).to_list() == expected
    via_expr = pl.DataFrame({"label": raw}).select(normalise_label_expr("label")).to_series()
    assert via_expr.to_list()[:-1] == expected[:-1]


def test_real_web_attack_spellings(samples_dir) -> None:
    """The sample's U+FFFD spelling and the GeneratedLabelledFlows U+0096 spelling."""
    sample = gzip.open(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz", "rt",
                       encoding="utf-8").read()
    xss = gzip.open(samples_dir / "cicids2017" / "GeneratedLabelledFlows" / "baseline_xss.csv.gz",
                    "rt", encoding="utf-8").read()
    assert "Web Attack \ufffd Brute Force" in sample
    assert "Web Attack \x96 XSS" in xss
    assert normalise_label("Web Attack \ufffd Brute Force") == "Web Attack - Brute Force"
    # byte 0x96 read the three ways a reader may decode it
    for decoded in (b"\x96".decode("utf-8", "replace"), b"\x96".decode("cp1252"),
                    b"\x96".decode("latin-1")):
        assert normalise_label(f"Web Attack {decoded} XSS") == "Web Attack - XSS"
