"""`deepids serve` and `deepids stream`: score records as they arrive, over HTTP or from a file or stdin."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.options import ModelDir
from deepids.errors import ConfigError

MaxEntities = Annotated[int, typer.Option(
    help="Most entities whose recent records are kept for sequence models; the least recently seen is "
         "evicted first (0 = unbounded).")]
IdleTtl = Annotated[float, typer.Option(
    help="Seconds after which an idle entity's history is forgotten (0 = never).")]
TopK = Annotated[int, typer.Option(help="Top contributing features to list per record.")]


Threads = Annotated[int, typer.Option(
    help="torch threads for scoring. 1 (the default) leaves the other cores to parsing and I/O and "
         "avoids thread contention on busy hosts; 0 = torch's default.")]


def _scorer(model: Path, max_entities: int, idle_ttl: float, top_k: int, threads: int = 1):
    from deepids.models import load_model
    from deepids.serving.scorer import LiveScorer

    if max_entities < 0 or idle_ttl < 0 or top_k < 0 or threads < 0:
        raise ConfigError("--max-entities, --idle-ttl, --top-k and --threads cannot be negative")
    if threads:
        import torch

        torch.set_num_threads(threads)
    detector = load_model(model)
    return LiveScorer(detector, top_k=top_k, max_entities=max_entities or None, idle_ttl=idle_ttl or None)


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for p in (cert, key):
        if p is not None and not p.is_file():
            raise ConfigError(f"{p}: no such file")
    if cert is not None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot use {cert} and {key} for TLS: {exc}") from None


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def serve(
    model: ModelDir,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = 16 << 20,
    max_queue: Annotated[int, typer.Option(help="Records queued for scoring before requests get 503 "
                                                "with Retry-After.")] = 65_536,
    max_batch: Annotated[int, typer.Option(help="Most records scored in one micro-batch.")] = 8_192,
    max_inflight_bytes: Annotated[int, typer.Option(help="Bytes of request bodies read and parsed at once; "
                                                         "beyond that new requests get 503.")] = 64 << 20,
    max_entities: MaxEntities = 100_000,
    idle_ttl: IdleTtl = 3600.0,
    top_k: TopK = 3,
    threads: Threads = 1,
    limit_concurrency: Annotated[int, typer.Option(help="Requests in progress before new ones get 503 (counted in "
                                                        "/metrics); uvicorn answers 503 itself beyond twice that.")] = 1024,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    token: Annotated[Optional[str], typer.Option(
        help="Bearer token every route but /healthz requires (default: $DEEPIDS_TOKEN). Prefer the "
             "environment variable: a command line is visible to other users.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert.")] = None,
    insecure: Annotated[bool, typer.Option(
        help="Allow a non-loopback --host without a token (only behind a proxy that authenticates).")] = False,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json (rendered offline).")] = True,
    body_timeout: Annotated[float, typer.Option(help="Seconds a request body may take to arrive "
                                                     "before 408.")] = 30.0,
    queue_timeout: Annotated[float, typer.Option(help="Seconds records may wait in the scoring queue; "
                                                      "then 503, nothing of the request scored.")] = 10.0,
) -> None:
    """Serve a model over HTTP: POST /v1/score, GET /healthz, /v1/model, /metrics (Prometheus)."""
    from deepids.serving.security import check_bind, resolve_token
    from deepids.serving.service import serve as run_server

    if min(max_body_bytes, max_queue, max_batch, max_inflight_bytes) < 1 or min(body_timeout, queue_timeout) <= 0:
        raise ConfigError("--max-body-bytes, --max-queue, --max-batch, --max-inflight-bytes, "
                          "--body-timeout and --queue-timeout must be positive")
    token = resolve_token(token)
    warning = check_bind(host, token, insecure)
    _check_tls(tls_cert, tls_key)
    scorer = _scorer(model, max_entities, idle_ttl, top_k, threads)
    if warning:
        _say("deepids: WARNING: " + warning)
    scheme = "https" if tls_cert else "http"
    _say(f"deepids: serving {scorer.name} from {model} on {scheme}://{host}:{port} "
         f"(threshold {scorer.threshold:.4g}; {'bearer token required' if token else 'no token'}"
         f"{'; docs at /docs' if docs else ''})")
    run_server(scorer, host, port, max_body_bytes=max_body_bytes, max_queue_records=max_queue,
               max_batch_records=max_batch, max_inflight_bytes=max_inflight_bytes,
               limit_concurrency=limit_concurrency, log_level=log_level, token=token,
               tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
               body_timeout=body_timeout, docs=docs, queue_timeout=queue_timeout)


def stream(
    model: ModelDir,
    input_: Annotated[str, typer.Option("--input", "-i", help="CSV or NDJSON file, or '-' for stdin.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep reading as the file grows "
                                                                "(survives truncation and rotation).")] = False,
    format_: Annotated[str, typer.Option("--format", help="auto (from the first line), csv, ndjson, or a connection log: zeek-conn, zeek-conn-json, "
                                                             "suricata-eve, nfdump-csv, nfstream.")] = "auto",
    alerts: Annotated[Optional[str], typer.Option(help="Write ECS alerts as NDJSON here ('-' for stdout; "
                                                        "default: stdout unless --webhook is given).")] = None,
    webhook: Annotated[Optional[str], typer.Option(help="POST alerts as NDJSON to this URL (retried with "
                                                         "backoff).")] = None,
    webhook_token: Annotated[Optional[str], typer.Option(
        envvar="DEEPIDS_WEBHOOK_TOKEN", show_envvar=True,
        help="Bearer token sent with every webhook POST.")] = None,
    webhook_buffer: Annotated[int, typer.Option(help="Alerts held for the webhook while it is unreachable; "
                                                     "beyond that the oldest are dropped and counted.")] = 10_000,
    scores: Annotated[Optional[Path], typer.Option(help="Also write every record's score as NDJSON here.")] = None,
    rejected: Annotated[Optional[Path], typer.Option(help="Write each rejected record's number, field and "
                                                          "reason as NDJSON here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Most records per micro-batch.")] = 1000,
    flush_interval: Annotated[float, typer.Option(help="Score a partial batch after this many seconds "
                                                       "without new input.")] = 0.5,
    max_entities: MaxEntities = 100_000,
    idle_ttl: IdleTtl = 3600.0,
    top_k: TopK = 3,
    threads: Threads = 1,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Write the summary as JSON "
                                                                                 "here.")] = None,
    state: Annotated[Optional[Path], typer.Option(
        help="Where to keep the position, counts and entity history, to resume after a crash or restart "
             "(default with --follow: ~/.local/state/deepids/stream-<input>-<hash>.state).")] = None,
    no_state: Annotated[bool, typer.Option("--no-state", help="Keep no state: start from the beginning "
                                                              "and save nothing.")] = False,
    max_line_bytes: Annotated[int, typer.Option(help="Longer lines are skipped and rejected "
                                                     "('line too long').")] = 16 << 20,
) -> None:
    """Score CSV or NDJSON records as they arrive (file, --follow, or stdin) and raise ECS alerts.

    Ctrl-C or the end of input flushes what was read and prints a summary: records read,
    scored, rejected by reason, alerts. With a state file (the default with --follow) a
    restarted stream resumes where the last one stopped; --scores, --rejected and --alerts
    are appended to, each record exactly once.
    """
    from deepids.atomic import open_append
    from deepids.serving.stream import run_stream

    state = _stream_state(model, input_, format_, follow, batch_size, flush_interval, webhook_buffer,
                          max_line_bytes, state, no_state)
    scorer = _scorer(model, max_entities, idle_ttl, top_k, threads)
    with ExitStack() as stack, _sigterm_as_interrupt():
        sinks = _alert_sinks(alerts, webhook, webhook_token, webhook_buffer)
        # appended to, like --alerts (0640, never through a symlink); a resumed run first cuts
        # them back to what its state saved
        scores_out = stack.enter_context(open_append(scores)) if scores else None
        rejected_out = stack.enter_context(open_append(rejected)) if rejected else None
        summary = run_stream(scorer, input_, sinks, follow=follow, fmt=format_, batch_size=batch_size,
                             flush_interval=flush_interval, scores_out=scores_out,
                             rejected_out=rejected_out, model_label=f"{scorer.name}:{model}",
                             state_path=state, max_line_bytes=max_line_bytes)
    _say("deepids: " + summary.line())
    if summary_json:
        from deepids.atomic import write_text

        write_text(summary_json, json.dumps(summary.to_dict(), indent=2) + "\n")


def _stream_state(model: Path, input_: str, format_: str, follow: bool, batch_size: int, flush_interval: float,
                  webhook_buffer: int, max_line_bytes: int, state: Path | None, no_state: bool) -> Path | None:
    """Check `stream`'s options before any work; the state file to use (None: keep no state)."""
    from deepids.serving.stream import FORMATS

    if format_ not in FORMATS:
        raise ConfigError(f"unknown --format {format_!r}; expected one of {', '.join(FORMATS)}")
    if input_ == "-" and follow:
        raise ConfigError("--follow applies to a file; stdin is followed anyway")
    if batch_size < 1 or flush_interval <= 0 or webhook_buffer < 1 or max_line_bytes < 1:
        raise ConfigError("--batch-size, --flush-interval, --webhook-buffer and --max-line-bytes must be positive")
    if state is not None and (no_state or input_ == "-"):
        raise ConfigError("--state needs a file as --input, and goes without --no-state")
    if state is None and follow and not no_state:
        from deepids.serving.checkpoint import default_state_path

        state = default_state_path(input_, str(model.resolve()))
    return state


def _alert_sinks(alerts: str | None, webhook: str | None, webhook_token: str | None, webhook_buffer: int) -> list:
    """Where alerts go: a file or stdout (the default without --webhook), and/or the webhook."""
    from deepids.serving.alerts import FileSink, WebhookSink

    sinks = []
    if alerts is not None or webhook is None:
        sinks.append(FileSink(alerts or "-"))
    if webhook is not None:
        if not webhook.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook must be an http:// or https:// URL, got {webhook!r}")
        sinks.append(WebhookSink(webhook, max_buffer=webhook_buffer, token=webhook_token or None))
    return sinks


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends the stream as Ctrl-C does: what was read is flushed and the summary printed."""
    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
