"""Serving benchmark: `deepids serve` on loopback, measured from a client in another process.

For each model (the dense AE when the package has it, and the LSTM-AE with windows of 10
flows per source IP) it starts `deepids serve` on 127.0.0.1 and measures:

1. batched throughput: 2 client threads POST pre-encoded JSON arrays of `--batch` records for
   `--seconds` seconds; records/s = records scored (as the answers say) / elapsed;
2. single-record latency: `--single` sequential requests of one record each, after a warm-up;
   p50/p99/max of the client's round-trip time;
3. overload: open-loop senders offer ~10x the throughput measured in 1 (as far as one client
   process can) for `--seconds` seconds against a small queue (`--max-queue`); counts every
   answer by status, then checks the server still answers /healthz and that its /metrics add
   up: records received == scored + rejected, and the client's 200/503 answers match them.

Records are real CICIDS2017 flows (the bundled GeneratedLabelledFlows Friday DDoS excerpt,
299 rows) RESAMPLED with replacement, with the source IP replaced by one of `--entities`
addresses so per-entity state is exercised; the JSON says so. Loopback only; bounded in time.

Run: `python -m bench.serve [--seconds 8] [--out bench/results/serve.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.flows import machine
from deepids.demo import SAMPLE, samples_dir
from deepids.io import read_flows

FRIDAY = "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
_SCORED = re.compile(rb'"scored": ?(\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_models(workdir: Path, epochs: int) -> dict[str, Path]:
    from deepids.models import MODELS, LSTMAutoencoder

    table, _ = read_flows(samples_dir() / SAMPLE)
    train = table[:4000]
    out: dict[str, Path] = {}
    if "dense-ae" in MODELS:
        m = MODELS["dense-ae"](epochs=epochs, verbose=False).fit(train)
        out["dense-ae"] = m.save(workdir / "dense-ae")
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


class Server:
    def __init__(self, model: Path, max_queue: int | None = None):
        self.port = free_port()
        cmd = [sys.executable, "-m", "deepids", "serve", "--model", str(model), "--port", str(self.port)]
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


def throughput(url: str, bodies: list[bytes], per_body: int, seconds: float, threads: int = 2) -> dict:
    import httpx

    counts = {"records": 0, "requests": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(k: int) -> None:
        with httpx.Client(timeout=60) as c:
            i = k
            while time.perf_counter() < stop_at:
                r = c.post(url + "/v1/score", content=bodies[i % len(bodies)],
                           headers={"content-type": "application/json"})
                i += threads
                m = _SCORED.search(r.content[-200:]) if r.status_code == 200 else None
                with lock:
                    counts["requests"] += 1
                    if m:
                        counts["records"] += int(m.group(1))
                    else:
                        counts["errors"] += 1

    started = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - started
    return {"records_per_second": round(counts["records"] / elapsed, 1), "records": counts["records"],
            "requests": counts["requests"], "errors": counts["errors"], "seconds": round(elapsed, 2),
            "records_per_request": per_body, "client_threads": threads}


def latency(url: str, singles: list[bytes], n: int) -> dict:
    import httpx

    times = []
    with httpx.Client(timeout=30) as c:
        for i in range(50):                    # warm-up
            c.post(url + "/v1/score", content=singles[i % len(singles)], headers={"content-type": "application/json"})
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post(url + "/v1/score", content=singles[i % len(singles)],
                       headers={"content-type": "application/json"})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    ms = np.asarray(times) * 1000
    return {"requests": n, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


def overload(url: str, bodies: list[bytes], per_body: int, target_rps: float, seconds: float,
             concurrency: int = 64) -> dict:
    """Open-loop: requests are launched on a fixed schedule, whatever the answers."""
    import httpx

    interval = per_body / target_rps
    statuses: dict[str, int] = {}
    records_by_status: dict[str, int] = {}
    scored = 0

    async def run() -> float:
        nonlocal scored
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=120, limits=limits) as c:
            sem = asyncio.Semaphore(concurrency * 4)

            async def one(body: bytes) -> None:
                nonlocal scored
                try:
                    r = await c.post(url + "/v1/score", content=body, headers={"content-type": "application/json"})
                    key = str(r.status_code)
                    if r.status_code == 200:
                        m = _SCORED.search(r.content[-200:])
                        scored += int(m.group(1)) if m else 0
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                records_by_status[key] = records_by_status.get(key, 0) + per_body
                sem.release()

            tasks = []
            start = time.perf_counter()
            i = 0
            while time.perf_counter() - start < seconds:
                await sem.acquire()
                tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
                i += 1
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            offered_seconds = time.perf_counter() - start
            await asyncio.gather(*tasks)
            return offered_seconds

    offered_seconds = asyncio.run(run())
    sent = sum(records_by_status.values())
    return {"target_records_per_second": round(target_rps), "offered_records_per_second": round(sent / offered_seconds),
            "records_sent": sent, "answers": statuses, "records_by_answer": records_by_status,
            "records_scored": scored, "records_per_request": per_body}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the throughput and overload phases")
    ap.add_argument("--batch", type=int, default=1000, help="records per request in the throughput phase")
    ap.add_argument("--single", type=int, default=1000, help="single-record requests for the latency phase")
    ap.add_argument("--entities", type=int, default=2000, help="distinct source IPs in the records")
    ap.add_argument("--max-queue", type=int, default=8192, help="server queue (records) in the overload phase")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = ap.parse_args(argv)

    records = make_records(20 * args.batch, args.entities)
    bodies = [json.dumps(records[i:i + args.batch]).encode() for i in range(0, len(records), args.batch)]
    over_batch = args.batch
    over_bodies = [json.dumps(records[i:i + over_batch]).encode() for i in range(0, 8 * over_batch, over_batch)]
    singles = [json.dumps([r]).encode() for r in records[:500]]
    result = {"machine": machine(), "records": f"{len(records):,} real CICIDS2017 flows resampled with replacement "
                                               f"from {FRIDAY} (299 rows), source IP replaced by one of "
                                               f"{args.entities} addresses",
              "transport": "HTTP/1.1 on 127.0.0.1, client and server in separate processes on the same machine",
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = train_models(Path(tmp), args.epochs)
        for name, path in models.items():
            entry: dict = {}
            server = Server(path)
            try:
                entry["batched"] = throughput(server.url, bodies, args.batch, args.seconds)
                entry["single_record"] = latency(server.url, singles, args.single)
                entry["server_peak_rss_mb"] = server.peak_rss_mb()
            finally:
                server.stop()
            server = Server(path, max_queue=args.max_queue)
            try:
                target = 10 * max(entry["batched"]["records_per_second"], 1.0)
                over = overload(server.url, over_bodies, over_batch, target, args.seconds)
                alive = server.metrics()
                received = alive.get("deepids_records_received_total", 0)
                rejected = sum(v for k, v in alive.items() if k.startswith("deepids_records_rejected_total"))
                over["server_alive_after"] = True
                over["server_counts"] = {"received": received, "scored": alive.get("deepids_records_scored_total"),
                                         "rejected": rejected,
                                         "rejected_overloaded": alive.get(
                                             'deepids_records_rejected_total{reason="overloaded"}', 0)}
                # server side: received == scored + rejected; client side: every 200 record was
                # scored, and every 503 record was either counted as overloaded or refused unread
                refused_unread = over["records_by_answer"].get("503", 0) - over["server_counts"]["rejected_overloaded"]
                over["records_refused_before_reading"] = refused_unread
                over["counts_add_up"] = (received == alive.get("deepids_records_scored_total", -1) + rejected
                                         and over["records_scored"] == alive.get("deepids_records_scored_total")
                                         and refused_unread >= 0)
                over["server_queue_capacity"] = args.max_queue
                over["server_peak_rss_mb"] = server.peak_rss_mb()
                entry["overload"] = over
            finally:
                server.stop()
            result["models"][name] = entry
            print(name, json.dumps(entry, indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
