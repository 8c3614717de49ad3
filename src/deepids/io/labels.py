"""Label normalisation: one spelling per class across CICIDS2017, CSE-CIC-IDS2018 and NSL-KDD.

Rules (the same in the scalar, the Series and the expression versions):

* surrounding whitespace is stripped and runs of whitespace collapse to one space;
* ``BENIGN``, ``Benign``, ``benign`` and NSL-KDD's ``normal`` (any case) become
  :data:`deepids.io.schema.BENIGN` (``"benign"``);
* the CICIDS2017 web-attack labels, whose separator comes out as byte 0x96 decoded however
  the file was read (U+FFFD, U+0096, ``ï¿½``), as an en dash, an em dash, a hyphen or
  nothing at all, become ``Web Attack - Brute Force``, ``Web Attack - XSS`` and
  ``Web Attack - Sql Injection``;
* everything else is kept exactly as the dataset spells it (``Infilteration`` stays,
  ``DoS Hulk`` stays). An empty label stays empty; the readers reject such rows.
"""

from __future__ import annotations

import re

import polars as pl

from deepids.io.schema import BENIGN

__all__ = ["normalise_label", "normalise_labels", "normalise_label_expr", "WEB_ATTACKS"]

#: canonical web-attack labels, keyed by the lower-cased attack name.
WEB_ATTACKS: dict[str, str] = {
    "brute force": "Web Attack - Brute Force",
    "xss": "Web Attack - XSS",
    "sql injection": "Web Attack - Sql Injection",
}

_BENIGN_SPELLINGS = frozenset({"benign", "normal"})
# "Web Attack", then any run of characters that are not ASCII letters or digits (the
# mangled 0x96 byte, a dash, spaces), then the attack name.
_WEB_ATTACK = re.compile(r"^web attack[^a-z0-9]*(brute force|xss|sql injection)$", re.IGNORECASE)
_WS = re.compile(r"\s+")


def normalise_label(raw: str | None) -> str:
    """Return the canonical spelling of one raw label (``None`` gives ``""``)."""
    if raw is None:
        return ""
    label = _WS.sub(" ", raw).strip()
    low = label.lower()
    if low in _BENIGN_SPELLINGS:
        return BENIGN
    m = _WEB_ATTACK.match(label)
    if m:
        return WEB_ATTACKS[m.group(1).lower()]
    return label


def normalise_labels(labels: pl.Series) -> pl.Series:
    """Vectorised :func:`normalise_label` for a Utf8 Series (nulls stay null).

    Labels have few distinct values, so each distinct value is normalised once and the
    Series is remapped in one pass.
    """
    labels = labels.cast(pl.Utf8)
    uniques = labels.drop_nulls().unique().to_list()
    mapping = {u: normalise_label(u) for u in uniques}
    if all(k == v for k, v in mapping.items()):
        return labels
    return labels.replace_strict(mapping, default=None, return_dtype=pl.Utf8)


def normalise_label_expr(expr: pl.Expr | str) -> pl.Expr:
    """The same rules as a polars expression, for use inside lazy queries."""
    if isinstance(expr, str):
        expr = pl.col(expr)
    cleaned = expr.cast(pl.Utf8).str.replace_all(r"\s+", " ").str.strip_chars()
    low = cleaned.str.to_lowercase()
    web_name = low.str.extract(r"^web attack[^a-z0-9]*(brute force|xss|sql injection)$", 1)
    return (
        pl.when(low.is_in(list(_BENIGN_SPELLINGS)))
        .then(pl.lit(BENIGN))
        .when(web_name.is_not_null())
        .then(web_name.replace_strict(WEB_ATTACKS, default=None, return_dtype=pl.Utf8))
        .otherwise(cleaned)
    )
