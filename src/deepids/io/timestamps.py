"""Timestamps of flow files and records, parsed to ``Datetime("us")``.

Parsed formats (unparseable values become null; readers count them as
``unparsed_timestamps``, they do not reject the row):

* ``D/M/YYYY H:MM`` — CICIDS2017 GeneratedLabelledFlows. The CIC files are day-first
  (``6/7/2017`` is Thursday 6 July 2017, the web-attack day) and use a 12-hour clock
  **without AM/PM**. CICIDS2017 was captured between 8:00 and 17:00, so in this exact
  format an hour below 8 is an afternoon hour and gets **+12 h** (``7/7/2017 3:56`` is
  15:56). No other format is shifted.
* ``D/M/YYYY H:MM:SS`` (CSE-CIC-IDS2018, ``14/02/2018 08:31:01``) and the same with
  ``AM``/``PM``;
* ``M/D/YYYY ...`` as a fallback for values that are not valid day-first dates;
* ISO 8601 (``2018-02-14 08:31:01``, ``2018-02-14T08:31:01.5``, ``2018-02-14``);
* ISO 8601 with a zone (``2020-09-21T19:35:27.123Z``, ``...+02:00``, ``2020-09-21 19:35:27 UTC``:
  Windows events), converted to UTC.

Flow files, flow records arriving live and Windows events all go through
:func:`parse_timestamps`: there is one timestamp parser.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

__all__ = ["parse_timestamps"]

_TS_FORMATS_PLAIN = (
    "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %I:%M %p", "%m/%d/%Y %I:%M %p",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
)
_TS_FORMATS_12H = ("%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M")
# with a zone (Windows events: `2020-09-21T19:35:27.123Z`, `...+02:00`, `... UTC`): read as UTC
_TS_FORMATS_ZONED = ("%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f UTC",
                     "%Y-%m-%d %H:%M:%S%.f%z")
_ZONED = r"(?:Z|[+-]\d\d:?\d\d| UTC)$"


def parse_timestamps(values: pl.Series) -> pl.Series:
    """Parse timestamps (flows, events) to ``Datetime("us")``; unparseable values become null.

    ``D/M/YYYY H:MM`` (CICIDS2017 GeneratedLabelledFlows) is a 12-hour clock without
    AM/PM, captured between 8:00 and 17:00: in that exact format an hour below 8 gets
    +12 h (``7/7/2017 3:56`` -> 2017-07-07 15:56). See the module docstring for all formats.
    """
    dt = pl.Datetime("us")
    if values.dtype == pl.Date or isinstance(values.dtype, pl.Datetime):
        out = values.cast(dt)
        if getattr(values.dtype, "time_zone", None):
            out = values.dt.replace_time_zone(None).cast(dt)
        return out
    if values.dtype != pl.Utf8:
        values = values.cast(pl.Utf8)
    s = pl.col("v").str.strip_chars()
    twelve = [s.str.strptime(dt, f, strict=False) for f in _TS_FORMATS_12H]
    shifted = pl.coalesce(twelve)
    shifted = pl.when(shifted.dt.hour() < 8).then(shifted + timedelta(hours=12)).otherwise(shifted)
    plain = [s.str.strptime(dt, f, strict=False) for f in _TS_FORMATS_PLAIN]
    date_only = s.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(dt)
    zoned = []
    if values.str.contains(_ZONED).any():       # one cheap pass; most flow files have no zones
        utc = pl.Datetime("us", "UTC")
        zoned = [pl.coalesce([s.str.strptime(utc, f, strict=False) for f in _TS_FORMATS_ZONED])
                 .dt.replace_time_zone(None)]
    return (pl.DataFrame({"v": values})
            .select(pl.coalesce([*zoned, *plain[:6], shifted, *plain[6:], date_only]).alias(values.name))
            .to_series())
