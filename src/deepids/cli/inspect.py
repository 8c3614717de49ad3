"""`deepids inspect`: what deepids reads from flow files, captures or event logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.guards import roles_of_files
from deepids.cli.options import LabelColumn, Layout, is_logs
from deepids.cli.render import inspect_table, out, write_json


def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Flow files or directories.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here ('-' for stdout).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
) -> None:
    """Show what deepids reads from flow files: layout, records, rejections, labels, time range, entities,
    and the role of every column (feature, label, identifier, ...) with the reason."""
    from deepids.io import inspect_flows

    if is_logs(paths):
        from deepids.io.logs import inspect_logs

        d = inspect_logs(paths).to_dict()
    else:
        d = inspect_flows(paths, layout=layout, label_column=label_column).to_dict()
        d["columns"] = roles_of_files(paths, layout, label_column)
    if json_out:
        write_json(d, json_out)
        if str(json_out) == "-":
            return
    out.print(inspect_table(d, title=", ".join(str(p) for p in paths)))
