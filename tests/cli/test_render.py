"""What the command shows: text from the data is printed as it is, never read as rich markup."""

from __future__ import annotations

from deepids.cli import render


def test_inspect_table_prints_markup_like_host_names_verbatim(capsys):
    report = {"layout": "evtx", "records": 3, "rejected": 0, "rejected_reasons": {},
              "hosts": {"[/x]": 2, "[bold]dc01[/bold]": 1}, "labels": {}}
    render.out.print(render.inspect_table(report, title="logs[/x]"))
    shown = capsys.readouterr().out
    assert "[/x]" in shown and "[bold]dc01[/bold]" in shown and "logs[/x]" in shown


def test_hunt_table_and_info_lines_print_markup_verbatim(capsys):
    finding = {"rank": 1, "entity": "[/host]", "window_start": "2020-09-21T00:00:00", "score": 3.5, "events": 12,
               "top_features": [{"feature": "[red]enc"}], "attack_labels": ["T1059 [/x]"]}
    render.out.print(render.hunt_table([finding], "host"))
    render.info("wrote [/x]/report.html")
    captured = capsys.readouterr()
    assert "[/host]" in captured.out and "[red]enc" in captured.out and "T1059 [/x]" in captured.out
    assert "wrote [/x]/report.html" in captured.err


def test_report_read_names_rejections_and_notes(capsys):
    render.report_read({"records": 1200, "layout": "cicids2017", "rejected": 3,
                        "rejected_reasons": {"negative duration": 3}, "notes": ["capture [truncated]"]})
    err = capsys.readouterr().err
    assert "read 1,200 records (cicids2017); rejected 3: 3 negative duration" in err
    assert "capture [truncated]" in err


def test_library_log_records_print_as_one_line_each(capsys):
    import logging

    logger = logging.getLogger("deepids")
    before = logger.level
    try:
        render.setup_logging("info")
        render.setup_logging("info")          # installed once
        logging.getLogger("deepids.atomic").warning("deepids: %s was not written", "out[/x].csv")
        logging.getLogger("deepids.distributed").info("started a local cluster")
        logging.getLogger("deepids.distributed").debug("not shown")
        err = capsys.readouterr().err.splitlines()
        assert err == ["deepids: warning: out[/x].csv was not written", "deepids: started a local cluster"]
    finally:
        for h in [h for h in logger.handlers if isinstance(h, render.ConsoleLogHandler)]:
            logger.removeHandler(h)
        logger.setLevel(before)


def test_progress_bars_are_fed_by_callbacks(capsys):
    from types import SimpleNamespace

    from deepids.cli.progress import epoch_bar, record_bar

    with record_bar(False) as progress:
        assert progress is None
    with record_bar(True) as progress:
        progress(10, 100)
        progress(120, 100)         # more than estimated: the total follows
        progress(130)
    with epoch_bar(True) as progress:
        progress(SimpleNamespace(description="dense-ae [/x]", epoch=1, epochs=2, train_loss=0.5, val_loss=0.4,
                                 best_val_loss=0.4))
    assert "Traceback" not in capsys.readouterr().err
