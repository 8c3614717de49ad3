"""The `deepids` command: a thin shell over the library.

One module per command group (`train`, `score` with `evaluate` and `flows`, `inspect`,
`benchmark` with `demo`, `hunt`, `live` with `serve` and `stream`, `catalog`: `models`;
`configure` turns train options into a model); shared options in
`options`; everything shown to the user in `render`. Errors a user can cause print one
line on stderr and exit with code 2; never a traceback. Anything else is a bug: one line
naming it and exit code 1 (the traceback with `--log-level debug`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from deepids.cli import benchmark, catalog, hunt, inspect, live, score, train
from deepids.cli.options import LogLevel
from deepids.cli.render import err, fail, said, setup_logging
from deepids.errors import DeepidsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deep-learning intrusion and anomaly detection for network flows.")


def _version(value: bool) -> None:
    if value:
        from deepids import __version__

        said(f"deepids {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False,
          log_level: Annotated[LogLevel, typer.Option(envvar="DEEPIDS_LOG_LEVEL", help="Show the library's log "
                                                      "messages from this level up on stderr.")] = LogLevel.warning,
          ) -> None:
    """Deep-learning intrusion and anomaly detection for network flows."""
    setup_logging(log_level.value)


for _command in (train.train, score.evaluate, score.score, inspect.inspect, benchmark.benchmark, hunt.hunt,
                 score.flows, benchmark.demo, live.serve, live.stream, catalog.models):
    app.command()(_command)


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt        # SIGTERM ends a run as Ctrl-C does: partial outputs removed


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    try:
        app(standalone_mode=True)
    except DeepidsError as exc:
        fail(str(exc))
    except OSError as exc:   # unreadable or unwritable paths the user named
        name = getattr(exc, "filename", None)
        fail(f"{exc.strerror or exc}{f': {name}' if name else ''}")
    except KeyboardInterrupt:
        err.print("deepids: interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:        # a bug, not the user's doing: one line, exit 1; the traceback on demand
        if logging.getLogger("deepids").isEnabledFor(logging.DEBUG):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        err.print(f"deepids: internal error: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:"
                  f"{where.lineno}; a bug in deepids: please report it; --log-level debug shows the traceback)",
                  markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
