"""A bug inside deepids reaches the user as one line and exit code 1, not as a traceback."""

from __future__ import annotations

import sys

import pytest

import deepids.cli as cli


def _broken(*args, **kwargs):
    raise RuntimeError("boom")


def test_an_unexpected_exception_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(cli, "app", _broken)
    monkeypatch.setattr(sys, "argv", ["deepids", "models"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 1
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert "Traceback" not in captured.err
    assert lines and lines[-1].startswith("deepids: internal error: RuntimeError: boom")
    assert "--log-level debug" in lines[-1]


def test_debug_logging_shows_the_traceback(monkeypatch):
    import logging

    monkeypatch.setattr(cli, "app", _broken)
    logger = logging.getLogger("deepids")
    before = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            cli.main()
    finally:
        logger.setLevel(before)
