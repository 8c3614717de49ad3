"""The hunting report: one self-contained HTML page (ranked findings, score timeline per entity, evidence)."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from deepids.hunting.hunt import HuntResult

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f0f0f0} .cmd{font-family:monospace;max-width:60em;word-break:break-all}
.label{background:#fde2e1;padding:1px 4px;border-radius:3px} svg{background:#fafafa;border:1px solid #ddd}
"""


def _e(v) -> str:
    return "" if v is None else html.escape(str(v))


def _timeline_svg(points: list[tuple[str, float]], marks: set[str], width: int = 720, height: int = 90) -> str:
    if not points:
        return ""
    ts = [datetime.fromisoformat(p[0]).timestamp() for p in points]
    vs = [p[1] for p in points]
    t0, t1 = min(ts), max(ts)
    lo, hi = min(vs + [0.0]), max(vs) or 1.0
    sx = lambda t: 10 + (width - 20) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)  # noqa: E731
    sy = lambda v: height - 10 - (height - 20) * ((v - lo) / (hi - lo) if hi > lo else 0.5)  # noqa: E731
    dots = []
    for (iso, v), t in zip(points, ts):
        colour = "#c0392b" if iso in marks else "#2c6fbb"
        dots.append(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="{4 if iso in marks else 2.5}" fill="{colour}">'
                    f"<title>{_e(iso)}: {v:.4g}</title></circle>")
    return f'<svg width="{width}" height="{height}">{"".join(dots)}</svg>'


def write_hunt_report(result: HuntResult, path: str | Path, title: str = "deepids hunt") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    s = doc["summary"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>",
             f"<p>{s['events']:,} events, {s['windows']:,} windows of {_e(s['window'])} over {s['entities']:,} "
             f"{_e(s['entity_type'])}s; window score: {_e(s['window_score'])}. ATT&amp;CK labels, where shown, "
             "come from the dataset's index and were not used for scoring.</p>",
             "<h2>Ranked findings</h2><table><tr><th>rank</th><th>entity</th><th>window</th><th>score</th>"
             "<th>events</th><th>top features</th><th>ATT&amp;CK label</th></tr>"]
    for f in doc["findings"]:
        feats = ", ".join(f"{_e(x['feature'])} ({100 * x['share']:.0f} %)" for x in f["top_features"])
        labels = " ".join(f"<span class='label'>{_e(x)}</span>" for x in f.get("attack_labels", []))
        parts.append(f"<tr><td><a href='#f{f['rank']}'>{f['rank']}</a></td><td>{_e(f['entity'])}</td>"
                     f"<td>{_e(f['window_start'])} – {_e(f['window_end'])}</td><td>{f['score']:.4g}</td>"
                     f"<td>{f['events']:,}</td><td>{feats}</td><td>{labels}</td></tr>")
    parts.append("</table><h2>Score timeline per entity</h2><p>One dot per window; red: a ranked finding.</p>")
    marks: dict[str, set[str]] = {}
    for f in doc["findings"]:
        marks.setdefault(f["entity"], set()).add(f["window_start"])
    for entity, points in sorted(doc["timeline"].items()):
        parts.append(f"<h3>{_e(entity)}</h3>{_timeline_svg(points, marks.get(entity, set()))}")
    parts.append("<h2>Evidence</h2>")
    for f in doc["findings"]:
        counts = ", ".join(f"{_e(k.replace('_', ' '))} {v:,}" for k, v in f.get("window_counts", {}).items())
        parts.append(f"<h3 id='f{f['rank']}'>#{f['rank']} {_e(f['entity'])}, {_e(f['window_start'])}</h3>"
                     f"<p>{counts}</p>"
                     "<table><tr><th>timestamp</th><th>record</th><th>event</th><th>channel</th><th>user</th>"
                     "<th>image</th><th>parent image</th><th>command line</th><th>score</th></tr>")
        for ev in f["evidence"]:
            parts.append(f"<tr><td>{_e(ev['timestamp'])}</td><td>{_e(ev['record_id'])}</td><td>{_e(ev['event_id'])}</td>"
                         f"<td>{_e(ev['channel'])}</td><td>{_e(ev['user'])}</td><td>{_e(ev['image'])}</td>"
                         f"<td>{_e(ev['parent_image'])}</td><td class='cmd'>{_e(ev['command_line'])}</td>"
                         f"<td>{ev['score']:.4g}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    from deepids.atomic import write_text

    write_text(path, "\n".join(parts))          # whole or not at all, 0640
    return path
