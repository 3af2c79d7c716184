"""The alert receiver of `etcd-dr server`, measured (issue 12's benchmark): a real `etcd-dr server`
(subprocess, free loopback ports, a Prefect server on SQLite) with two clusters whose hosts answer
nothing, so a recover run ends quickly after it starts.

  latency  a firing notification -> the recover run created by the automation (`created`) and
           started by the serving runner (`start_time`), for --rounds incidents one after another
           (each resolved before the next); the cluster says automatic_recovery, so no approval
  burst    --burst identical notifications from --threads threads (a client each, keep-alive):
           per-request latency p50/p99 and throughput; the deduplication holding means exactly one
           incident opened in all the answers and exactly one recover run for it 10 s later

A benchmark: it prints figures (and exits 1 only if the deduplication did not hold).

    .venv/bin/python benchmarks/receiver.py --rounds 5 --burst 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers: the server as its tests start it

from tests.console.conftest import TOKEN, Console, start_console  # noqa: E402

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def notification(cluster: str, status: str, fp: str) -> bytes:
    a = {"status": status, "labels": {"alertname": "etcdNoLeader", "cluster": cluster},
         "annotations": {}, "startsAt": "2026-12-05T19:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prom", "fingerprint": fp}  # fmt: skip
    return json.dumps({"version": "4", "status": status, "receiver": "etcd-dr", "groupKey": "{}:{}",
                       "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://am", "alerts": [a]}).encode()  # fmt: skip


def runs_of_incident(c: Console, incident: str) -> list[dict]:
    return [r for r in c.flow_runs("recover") if r["parameters"].get("incident") == incident]


def ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s).timestamp() if s else None


def latency(c: Console, rounds: int) -> list[dict]:
    url = f"{c.receiver}/alerts/alertmanager"
    out = []
    for i in range(rounds):
        fp = f"lat-{i}"
        sent = time.time()
        r = httpx.post(url, content=notification("bench-auto", "firing", fp), headers=HEADERS, timeout=30)
        answered = time.time() - sent
        (inc,) = r.json()["incidents"]
        run = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            runs = runs_of_incident(c, inc["incident"])
            if runs and runs[0]["start_time"]:
                run = runs[0]
                break
            time.sleep(0.2)
        httpx.post(url, content=notification("bench-auto", "resolved", fp), headers=HEADERS, timeout=30)
        row = {"answered_s": round(answered, 3)}
        if run:
            row["created_s"] = round(ts(run["created"]) - sent, 2)  # type: ignore[operator]
            row["started_s"] = round(ts(run["start_time"]) - sent, 2)  # type: ignore[operator]
        out.append(row)
        print(f"round {i + 1}: {row}", file=sys.stderr)
    return out


def burst(c: Console, n: int, threads: int) -> dict:
    url = f"{c.receiver}/alerts/alertmanager"
    raw = notification("bench-gated", "firing", "burst")
    lat: list[float] = []
    opened: list[dict] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]

    def worker(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            for _ in range(k):
                t = time.perf_counter()
                r = http.post(url, content=raw, headers=HEADERS)
                d = time.perf_counter() - t
                with lock:
                    lat.append(d)
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        opened.extend(r.json()["incidents"])

    t0 = time.perf_counter()
    ts_ = [threading.Thread(target=worker, args=(k,)) for k in per]
    for t in ts_:
        t.start()
    for t in ts_:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    time.sleep(10)  # the automation and the runner have long acted on every event by now
    runs = runs_of_incident(c, opened[0]["incident"]) if len(opened) == 1 else []
    return {
        "requests": n, "threads": threads, "codes": codes, "wall_s": round(wall, 2),
        "per_s": round(n / wall, 1), "p50_ms": round(1000 * lat[len(lat) // 2], 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
        "max_ms": round(1000 * lat[-1], 1), "incidents_opened": len(opened), "recover_runs": len(runs),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--threads", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="etcd-dr-bench-") as d:
        t0 = time.monotonic()
        c = start_console(Path(d), {"bench-auto": {"automatic_recovery": True}, "bench-gated": {}})
        up = time.monotonic() - t0
        try:
            lat = latency(c, a.rounds)
            b = burst(c, a.burst, a.threads)
        finally:
            c.stop()
    started = [r["started_s"] for r in lat if "started_s" in r]
    created = [r["created_s"] for r in lat if "created_s" in r]
    res = {"server_start_s": round(up, 1), "latency": lat, "burst": b,
           "started_median_s": statistics.median(started) if started else None,
           "created_median_s": statistics.median(created) if created else None}  # fmt: skip
    ok = b["incidents_opened"] == 1 and b["recover_runs"] == 1
    if a.json:
        print(json.dumps(res))
    else:
        print(f"etcd-dr server up in {up:.1f} s")
        print(f"webhook -> run created: median {res['created_median_s']} s; -> run started: median "
              f"{res['started_median_s']} s ({len(started)} of {a.rounds} rounds)")  # fmt: skip
        print(f"burst: {b['requests']} requests from {b['threads']} threads in {b['wall_s']} s "
              f"({b['per_s']}/s), p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, max {b['max_ms']} ms, "
              f"codes {b['codes']}; incidents opened {b['incidents_opened']}, "
              f"recover runs {b['recover_runs']}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
