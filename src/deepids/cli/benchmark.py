"""`deepids benchmark` and `deepids demo`: train and compare models on a leakage-free split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.options import DataFiles, LabelColumn, Layout, Quiet
from deepids.cli.render import benchmark_protocol_line, benchmark_table, info, out, print_metrics, said


def benchmark(
    data: DataFiles,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for results.md/json, plots, report.html.")],
    test: Annotated[Optional[list[Path]], typer.Option(help="Test on these files instead of a split (cross-dataset).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated subset of models (default: all).")] = None,
    quick: Annotated[bool, typer.Option(help="Fewer epochs, members and trees: a smoke test, not a result.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the split and every model.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of records held out for testing.")] = 0.3,
    sequence_length: Annotated[Optional[int], typer.Option(help="LSTM window length (default: 10 when records carry "
                                                           "src_ip or timestamps, else 1).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Quiet = False,
) -> None:
    """Train and test every model on the same leakage-free split; write the comparison."""
    from deepids.evaluation.benchmark import run_benchmark

    result = run_benchmark(data, out_dir, test=test, models=models.split(",") if models else None, quick=quick,
                           seed=seed, test_fraction=test_fraction, sequence_length=sequence_length, layout=layout,
                           label_column=label_column, verbose=not quiet, info=info)
    info(benchmark_protocol_line(result.protocol))
    out.print(benchmark_table(result.models))
    said(f"wrote {out_dir / 'results.md'}, {out_dir / 'results.json'}, {out_dir / 'report.html'}")


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to put the model, scores and plots.")] = Path("demo-output"),
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 20,
    quiet: Quiet = False,
) -> None:
    """Train the LSTM autoencoder on the bundled CICIDS2017 sample and evaluate it on held-out rows."""
    from deepids.demo import run_demo

    run_demo(out_dir, epochs=epochs, verbose=not quiet, print_metrics=print_metrics, info=info)
