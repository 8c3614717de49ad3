"""`deepids hunt`: ranked host or user windows of event logs, with the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.options import HuntBy, Quiet
from deepids.cli.progress import record_bar
from deepids.cli.render import hunt_table, info, out, write_json


def hunt(
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model directory (trained on event logs).")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Event logs: .evtx, JSON Lines (.gz), or folders; repeat for more.")],
    top: Annotated[int, typer.Option(help="Findings to report.")] = 20,
    by: Annotated[HuntBy, typer.Option(help="Rank windows of hosts or of users, or whole processes or process "
                                       "trees (models trained with process-tree context).")] = HuntBy.host,
    window: Annotated[str, typer.Option(help="Window length: 30s, 5m, 1h ...")] = "5m",
    html_out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the HTML report here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write findings.json here ('-' for stdout).")] = None,
    top_k: Annotated[int, typer.Option(help="A window's score is the mean of its top-k event scores.")] = 10,
    evidence: Annotated[int, typer.Option(help="Events listed as evidence per finding.")] = 10,
    quiet: Quiet = False,
) -> None:
    """Rank host or user time windows, processes or process trees by how unusual their events are, with the evidence."""
    from deepids.hunting.commands import run_hunt

    with record_bar(not quiet) as progress:
        result = run_hunt(model, data, top=top, by=by.value, window=window, top_k=top_k, evidence=evidence,
                          progress=progress, info=info)
    if str(json_out) != "-":        # stdout carries the JSON alone when asked for it there
        out.print(hunt_table(result.findings, by.value))
    if html_out:
        from deepids.hunting import write_hunt_report

        write_hunt_report(result, html_out, title=f"deepids hunt: {', '.join(str(p) for p in data)}")
        info(f"wrote {html_out}")
    if json_out:
        write_json(result.to_dict(), json_out)
