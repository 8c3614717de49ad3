"""Serving benchmark: `deepids serve` on loopback, measured from clients in other processes.

For each model (the dense AE, and the LSTM-AE with windows of 10 flows per source IP) it
starts `deepids serve` on 127.0.0.1 and measures:

1. batched throughput: `--clients` client threads POST pre-encoded JSON arrays of `--batch`
   records, back to back, for `--seconds` seconds; records/s = records scored (as the answers
   say) / elapsed. Repeated `--repeats` times; best and median are reported.
2. single-record latency: `--single` sequential requests of one record each, after a warm-up;
   p50/p99/max of the client's round-trip time. Repeated `--repeats` times.
3. overload: `--overload-procs` load-generator processes, each open-loop (requests launched on
   a fixed schedule whatever the answers, on up to `--overload-conns` connections) offer 10x
   the best throughput measured in 1, for `--seconds` seconds, against a small queue
   (`--max-queue`). Every answer is counted by status; then the server must still answer
   /healthz and its /metrics must add up: records received == scored + rejected, the records
   in the clients' 200 answers == records scored, and every 503 is counted by the server.

The machine is shared: every phase records `os.getloadavg()` and the CPU count beside its
figures. The clients speak plain HTTP/1.1 over sockets (pre-built requests), so that the load
generator takes as little of the shared CPU as it can.

Records are real CICIDS2017 flows (the bundled GeneratedLabelledFlows Friday DDoS excerpt,
299 rows) RESAMPLED with replacement, with the source IP replaced by one of `--entities`
addresses so per-entity state is exercised; the JSON says so. Loopback only; bounded in time
and in requests.

Run: `python -m bench.serve [--seconds 6] [--repeats 3] [--out bench/results/serve.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.flows import machine
from deepids.datasets import SAMPLE, samples_dir
from deepids.io import read_flows

FRIDAY = "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
_SCORED = re.compile(rb'"scored": ?(\d+)')
_MAX_REQUESTS = 200_000          # per phase and process: the bound on what a run can send


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_models(workdir: Path, epochs: int, which: list[str]) -> dict[str, Path]:
    from deepids.models import MODELS, LSTMAutoencoder

    table, _ = read_flows(samples_dir() / SAMPLE)
    train = table[:4000]
    out: dict[str, Path] = {}
    if "dense-ae" in which:
        m = MODELS["dense-ae"](epochs=epochs, verbose=False).fit(train)
        out["dense-ae"] = m.save(workdir / "dense-ae")
    if "lstm-ae" in which:
        m = LSTMAutoencoder(sequence_length=10, epochs=epochs, verbose=False, entity="src_ip").fit(train)
        out["lstm-ae (T=10, per source IP)"] = m.save(workdir / "lstm-ae-10")
    return out


def make_records(n: int, entities: int, seed: int = 0) -> list[dict]:
    table, _ = read_flows(samples_dir() / FRIDAY)
    rng = np.random.default_rng(seed)
    rows = table.to_dicts()
    ips = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(entities)]
    out = []
    for k in rng.integers(0, len(rows), n):
        r = dict(rows[int(k)])
        r["src_ip"] = ips[int(rng.integers(entities))]
        r["timestamp"] = r["timestamp"].isoformat() if r.get("timestamp") else None
        r.pop("label", None)
        out.append(r)
    return out


def http_request(port: int, body: bytes, content_type: str = "application/json") -> bytes:
    """One complete HTTP/1.1 request, built once and sent many times."""
    head = (f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return status, length, close


class Connection:
    """A keep-alive HTTP/1.1 connection on loopback (blocking), cheap on the client's CPU."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        try:
            self.sock.sendall(raw)
            while b"\r\n\r\n" not in self.buf:
                self.buf += self._recv()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            while len(rest) < length:
                rest += self._recv()
        except OSError:
            self.close()
            raise
        body, self.buf = rest[:length], rest[length:]
        if close:
            self.close()
        return status, body

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionResetError("server closed the connection")
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Server:
    def __init__(self, model: Path, max_queue: int | None = None, extra: list[str] = ()):
        self.port = free_port()
        cmd = [sys.executable, "-m", "deepids", "serve", "--model", str(model), "--port", str(self.port), *extra]
        if max_queue:
            cmd += ["--max-queue", str(max_queue)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server died: {self.proc.stderr.read().decode()}")
        raise RuntimeError("server did not start in 120 s")

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def alive(self) -> bool:
        import httpx

        try:
            return httpx.get(self.url + "/healthz", timeout=10).json()["status"] == "ok"
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def metrics(self) -> dict[str, float]:
        import httpx

        out: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def throughput(port: int, requests: list[bytes], per_body: int, seconds: float, threads: int = 2) -> dict:
    counts = {"records": 0, "requests": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(k: int) -> None:
        conn = Connection(port)
        i = k
        while time.perf_counter() < stop_at and i < _MAX_REQUESTS:
            try:
                status, body = conn.request(requests[i % len(requests)])
            except OSError:
                status, body = 0, b""
            i += threads
            m = _SCORED.search(body[-200:]) if status == 200 else None
            with lock:
                counts["requests"] += 1
                if m:
                    counts["records"] += int(m.group(1))
                else:
                    counts["errors"] += 1
        conn.close()

    load_before = load()
    started = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - started
    return {"records_per_second": round(counts["records"] / elapsed, 1), "records": counts["records"],
            "requests": counts["requests"], "errors": counts["errors"], "seconds": round(elapsed, 2),
            "records_per_request": per_body, "client_threads": threads, "loadavg_before": load_before,
            "loadavg_after": load()}


def latency(port: int, singles: list[bytes], n: int) -> dict:
    conn = Connection(port, timeout=30)
    for i in range(50):                    # warm-up
        conn.request(singles[i % len(singles)])
    load_before = load()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        status, body = conn.request(singles[i % len(singles)])
        times.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"single-record request answered {status}: {body[:200]!r}")
    conn.close()
    ms = np.asarray(times) * 1000
    return {"requests": n, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "loadavg_before": load_before, "loadavg_after": load()}


# ------------------------------------------------------------------------------ overload
async def _open_loop(port: int, requests: list[bytes], per_body: int, rate: float, seconds: float,
                     conns: int, start_at: float) -> dict:
    """One load generator: requests launched every 1/rate s on up to `conns` connections."""
    interval = 1.0 / rate
    answers: dict[str, int] = {}
    records: dict[str, int] = {}
    state = {"next": 0, "scored": 0, "behind": 0}

    def count(key: str) -> None:
        answers[key] = answers.get(key, 0) + 1
        records[key] = records.get(key, 0) + per_body

    async def connection() -> None:
        reader = writer = None
        while True:
            k = state["next"]
            due = start_at + k * interval
            if due - start_at >= seconds or time.time() - start_at >= seconds or k >= _MAX_REQUESTS:
                break                    # bounded in time and in count: nothing is sent after `seconds`
            state["next"] = k + 1
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                state["behind"] += 1     # the schedule slipped: every connection was busy
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
                writer.write(requests[k % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")       # the answer may come before the body is sent
                status, length, close = _parse_head(head[:-4])
                body = await reader.readexactly(length)
                count(str(status))
                if status == 200:
                    m = _SCORED.search(body[-200:])
                    state["scored"] += int(m.group(1)) if m else 0
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                count(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    await asyncio.gather(*(connection() for _ in range(conns)))
    return {"answers": answers, "records_by_answer": records, "records_scored": state["scored"],
            "requests_sent": state["next"], "schedule_slips": state["behind"], "ended": time.time()}


def _load_generator(args: tuple, barrier, results) -> None:
    barrier.wait(120)                                 # every generator starts at once, once spawned
    port, requests, per_body, rate, seconds, conns = args
    start_at = time.time() + 0.2
    out = asyncio.run(_open_loop(port, requests, per_body, rate, seconds, conns, start_at))
    out["started"] = start_at
    results.put(out)


def overload(port: int, requests: list[bytes], per_body: int, target_rps: float, seconds: float,
             procs: int, conns: int) -> dict:
    """`procs` open-loop generators in separate processes, together offering `target_rps` records/s."""
    rate = target_rps / per_body / procs              # requests/s for each generator
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [ctx.Process(target=_load_generator, args=((port, requests[p::procs] or requests, per_body, rate,
                                                          seconds, conns), barrier, results), daemon=True)
               for p in range(procs)]
    load_before = load()
    for w in workers:
        w.start()
    parts = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(30)
    start_at = min(p["started"] for p in parts)
    elapsed = max(p["ended"] for p in parts) - start_at
    answers: dict[str, int] = {}
    records: dict[str, int] = {}
    for p in parts:
        for k, v in p["answers"].items():
            answers[k] = answers.get(k, 0) + v
        for k, v in p["records_by_answer"].items():
            records[k] = records.get(k, 0) + v
    sent = sum(records.values())
    return {"target_records_per_second": round(target_rps), "offered_records_per_second": round(sent / seconds),
            "offered_x_sustainable": None, "load_generators": procs, "connections_per_generator": conns,
            "seconds_offered": seconds, "seconds_until_last_answer": round(elapsed, 2),
            "records_sent": sent, "answers": answers, "records_by_answer": records,
            "records_scored": sum(p["records_scored"] for p in parts),
            "schedule_slips": sum(p["schedule_slips"] for p in parts), "records_per_request": per_body,
            "loadavg_before": load_before, "loadavg_after": load()}


def _summary(runs: list[dict], key: str, best=max) -> dict:
    values = [r[key] for r in runs]
    return {"best": best(values), "median": round(statistics.median(values), 2), "runs": values}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each throughput run and of the overload")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the throughput and latency phases")
    ap.add_argument("--batch", type=int, default=1000, help="records per request in the throughput phase")
    ap.add_argument("--clients", type=int, default=2, help="client threads in the throughput phase")
    ap.add_argument("--single", type=int, default=1000, help="single-record requests per latency run")
    ap.add_argument("--entities", type=int, default=2000, help="distinct source IPs in the records")
    ap.add_argument("--max-queue", type=int, default=8192, help="server queue (records) in the overload phase")
    ap.add_argument("--overload-procs", type=int, default=4, help="load-generator processes in the overload phase")
    ap.add_argument("--overload-conns", type=int, default=16, help="connections per load generator")
    ap.add_argument("--models", default="dense-ae,lstm-ae", help="comma-separated: dense-ae, lstm-ae")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before the throughput runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = ap.parse_args(argv)

    records = make_records(20 * args.batch, args.entities)
    bodies = [json.dumps(records[i:i + args.batch]).encode() for i in range(0, len(records), args.batch)]
    singles = [json.dumps([r]).encode() for r in records[:500]]
    result = {"machine": machine(), "cpu_count": os.cpu_count(), "loadavg_start": load(),
              "command": "python -m bench.serve " + " ".join(argv if argv is not None else sys.argv[1:]),
              "records": f"{len(records):,} real CICIDS2017 flows resampled with replacement "
                         f"from {FRIDAY} (299 rows), source IP replaced by one of "
                         f"{args.entities} addresses",
              "transport": "HTTP/1.1 on 127.0.0.1; clients (plain sockets, pre-built requests) and server in "
                           "separate processes on the same shared machine",
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = train_models(Path(tmp), args.epochs, args.models.split(","))
        for name, path in models.items():
            entry: dict = {}
            server = Server(path)
            try:
                reqs = [http_request(server.port, b) for b in bodies]
                one = [http_request(server.port, b) for b in singles]
                throughput(server.port, reqs, args.batch, args.warmup, args.clients)        # warm-up
                runs = [throughput(server.port, reqs, args.batch, args.seconds, args.clients)
                        for _ in range(args.repeats)]
                entry["batched"] = {"records_per_second": _summary(runs, "records_per_second"), "runs": runs}
                lat = [latency(server.port, one, args.single) for _ in range(args.repeats)]
                entry["single_record"] = {"p50_ms": _summary(lat, "p50_ms", min),
                                          "p99_ms": _summary(lat, "p99_ms", min), "runs": lat}
                entry["server_peak_rss_mb"] = server.peak_rss_mb()
            finally:
                server.stop()
            server = Server(path, max_queue=args.max_queue)
            try:
                sustainable = entry["batched"]["records_per_second"]["best"]
                over = overload(server.port, [http_request(server.port, b) for b in bodies], args.batch,
                                10 * max(sustainable, 1.0), args.seconds, args.overload_procs, args.overload_conns)
                over["offered_x_sustainable"] = round(over["offered_records_per_second"] / sustainable, 2)
                over["server_alive_after"] = server.alive()
                m = server.metrics()
                received = m.get("deepids_records_received_total", 0)
                rejected = sum(v for k, v in m.items() if k.startswith("deepids_records_rejected_total"))
                scored = m.get("deepids_records_scored_total", 0)
                overloaded = m.get('deepids_records_rejected_total{reason="overloaded"}', 0)
                server_503 = m.get('deepids_requests_total{code="503"}', 0)
                client_503 = over["answers"].get("503", 0)
                over["server_counts"] = {"received": received, "scored": scored, "rejected": rejected,
                                         "rejected_overloaded": overloaded, "answered_503": server_503,
                                         "answered_200": m.get('deepids_requests_total{code="200"}', 0)}
                # records refused before their body was read: in no record count, but in the 503 count
                over["records_refused_before_reading"] = over["records_by_answer"].get("503", 0) - overloaded
                unanswered = sum(v for k, v in over["answers"].items() if not k.isdigit())
                over["requests_without_answer"] = unanswered
                over["counts_add_up"] = (received == scored + rejected
                                         and over["records_scored"] == scored
                                         and over["records_refused_before_reading"] >= 0
                                         and over["answers"].get("200", 0) == over["server_counts"]["answered_200"]
                                         and (unanswered > 0 or client_503 == server_503))
                over["server_queue_capacity"] = args.max_queue
                over["server_peak_rss_mb"] = server.peak_rss_mb()
                entry["overload"] = over
            finally:
                server.stop()
            result["models"][name] = entry
            print(name, json.dumps({"batched_rps": entry["batched"]["records_per_second"],
                                    "single_p50_ms": entry["single_record"]["p50_ms"],
                                    "single_p99_ms": entry["single_record"]["p99_ms"],
                                    "overload": {k: over[k] for k in ("offered_records_per_second",
                                                                      "offered_x_sustainable", "answers",
                                                                      "counts_add_up", "server_alive_after")}},
                                   indent=1), file=sys.stderr)
    result["loadavg_end"] = load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
