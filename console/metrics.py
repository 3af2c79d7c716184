"""Metrics of the DR itself, per cluster, on the receiver port's `GET /metrics` (Prometheus text
format 0.0.4), read afresh at each scrape: a stale backup or a failing rehearsal pages someone before
the disaster does (rules: deployments/etcd-dr-alerts.yml).

- the newest verified snapshot's age, from the cluster's catalog (the one `etcd-dr snapshot` and the
  snapshot flow write);
- the last rehearsal: ok, RTO, RPO and when, from `<state dir>/rehearsal-last.json` (written by the
  served rehearse flow);
- the last readiness check's result and the failed checks, and the recoveries run by final state,
  from the Prefect server's flow runs;
- the receiver's requests and its open incidents.

A value that cannot be read is left out and `etcd_dr_metric_errors{cluster, source}` says so: an
absent series, not a made-up zero."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.clusters import Cluster
from etcd_dr.inventory import Inventory, load_inventory

log = logging.getLogger("etcd_dr.console.metrics")
REHEARSAL_FILE = "rehearsal-last.json"

HELP: dict[str, tuple[str, str]] = {
    "etcd_dr_snapshot_verified": ("gauge", "1 when the catalog holds a verified snapshot of the cluster"),
    "etcd_dr_snapshot_verified_age_seconds": ("gauge", "age of the newest verified snapshot"),
    "etcd_dr_snapshot_verified_revision": ("gauge", "etcd revision of the newest verified snapshot"),
    "etcd_dr_rehearsal_ok": ("gauge", "1 when the last rehearsal was ok"),
    "etcd_dr_rehearsal_timestamp_seconds": ("gauge", "when the last rehearsal ended (unix time)"),
    "etcd_dr_rehearsal_rto_seconds": (
        "gauge",
        "RTO of the last rehearsal: fault to writes accepted for good",
    ),
    "etcd_dr_rehearsal_rpo_writes": ("gauge", "acknowledged writes the last rehearsal lost"),
    "etcd_dr_readiness_ok": ("gauge", "1 when the last finished readiness check passed"),
    "etcd_dr_readiness_timestamp_seconds": ("gauge", "when the last readiness check ended (unix time)"),
    "etcd_dr_readiness_failures": ("gauge", "failed readiness checks among the newest 200 check runs"),
    "etcd_dr_recoveries": ("gauge", "recover runs by final state, among the newest 200"),
    "etcd_dr_incidents_open": ("gauge", "alert incidents open (the receiver's)"),
    "etcd_dr_receiver_requests_total": ("counter", "alert notifications received, by result"),
    "etcd_dr_metric_errors": ("gauge", "1 when a source of these metrics could not be read"),
}


def rehearsal_path(inv: Inventory) -> Path:
    return inv.state_path(REHEARSAL_FILE)


def record_rehearsal(inv: Inventory, ok: bool, report: dict[str, Any] | None) -> None:
    """What the metrics read of the last rehearsal: ok, RTO, RPO, when (atomically replaced)."""
    path = rehearsal_path(inv)
    r = report or {}
    data = {"at": time.time(), "ok": ok, "scenario": r.get("scenario"), "rto_s": r.get("rto_s"),
            "rpo_writes": r.get("rpo_writes")}  # fmt: skip
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples: Iterable[Sample]) -> str:
    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.name, []).append(s)
    out: list[str] = []
    for name, (kind, text) in HELP.items():
        if name not in by:
            continue
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for s in by[name]:
            labels = ",".join(f'{k}="{_esc(v)}"' for k, v in s.labels.items())
            out.append(f"{name}{{{labels}}} {s.value:g}" if labels else f"{name} {s.value:g}")
    return "\n".join(out) + "\n"


def cluster_samples(cl: Cluster, now: float) -> list[Sample]:
    """What the cluster's own files say: the snapshot catalog and the last rehearsal."""
    from etcd_dr.snapshots.service import catalog_for

    lab = {"cluster": cl.name}
    out: list[Sample] = []
    try:
        inv = load_inventory(cl.path)
    except Exception:
        return [Sample("etcd_dr_metric_errors", {**lab, "source": "inventory"}, 1)]
    try:
        newest = catalog_for(inv).newest(inv.cluster)
        out.append(Sample("etcd_dr_snapshot_verified", lab, 1 if newest else 0))
        if newest:
            out.append(
                Sample(
                    "etcd_dr_snapshot_verified_age_seconds", lab, round(now - newest.created.timestamp(), 1)
                )
            )
            out.append(Sample("etcd_dr_snapshot_verified_revision", lab, newest.revision))
    except Exception:
        out.append(Sample("etcd_dr_metric_errors", {**lab, "source": "catalog"}, 1))
    path = rehearsal_path(inv)
    if path.exists():
        try:
            r = json.loads(path.read_text())
            out.append(Sample("etcd_dr_rehearsal_ok", lab, 1 if r["ok"] else 0))
            out.append(Sample("etcd_dr_rehearsal_timestamp_seconds", lab, r["at"]))
            for key, name in (
                ("rto_s", "etcd_dr_rehearsal_rto_seconds"),
                ("rpo_writes", "etcd_dr_rehearsal_rpo_writes"),
            ):
                if isinstance(r.get(key), int | float):
                    out.append(Sample(name, lab, r[key]))
        except (OSError, ValueError, KeyError, TypeError):
            out.append(Sample("etcd_dr_metric_errors", {**lab, "source": "rehearsal"}, 1))
    return out


def run_samples(clusters: Iterable[str], check_runs: list[Any], recover_runs: list[Any]) -> list[Sample]:
    """From the Prefect server's flow runs (final ones): the last check per cluster and its
    failures, the recoveries by final state."""
    out: list[Sample] = []
    names = set(clusters)
    last: dict[str, Any] = {}
    failed: Counter[str] = Counter()
    for run in check_runs:
        c = (run.parameters or {}).get("cluster")
        if c not in names or run.state is None or not run.state.is_final():
            continue
        if run.state.is_failed() or run.state.is_crashed():
            failed[c] += 1
        if c not in last or (run.end_time and last[c].end_time and run.end_time > last[c].end_time):
            last[c] = run
    for c in sorted(names):
        if c in last:
            run = last[c]
            out.append(Sample("etcd_dr_readiness_ok", {"cluster": c}, 1 if run.state.is_completed() else 0))
            if run.end_time:
                out.append(
                    Sample("etcd_dr_readiness_timestamp_seconds", {"cluster": c}, run.end_time.timestamp())
                )
        out.append(Sample("etcd_dr_readiness_failures", {"cluster": c}, failed[c]))
    rec: Counter[tuple[str, str]] = Counter()
    for run in recover_runs:
        c = (run.parameters or {}).get("cluster")
        if c in names and run.state is not None and run.state.is_final():
            rec[(c, run.state.type.value.lower())] += 1
    for (c, state), n in sorted(rec.items()):
        out.append(Sample("etcd_dr_recoveries", {"cluster": c, "state": state}, n))
    return out


class Metrics:
    """The `/metrics` page of `etcd-dr server`: `read_runs(deployment_id)` gives that deployment's
    flow runs (the Prefect client), `receiver` the alert receiver (or None)."""

    def __init__(
        self,
        clusters: dict[str, Cluster],
        deployment_ids: dict[str, Any],
        read_runs: Callable[[Any], list[Any]],
        receiver: Any = None,
    ) -> None:
        self.clusters, self.ids, self.read_runs, self.receiver = clusters, deployment_ids, read_runs, receiver

    def __call__(self) -> str:
        now = time.time()
        samples: list[Sample] = []
        for cl in self.clusters.values():
            samples += cluster_samples(cl, now)
        try:
            checks = self.read_runs(self.ids["check"])
            recovers = self.read_runs(self.ids["recover"])
            samples += run_samples(self.clusters, checks, recovers)
        except Exception as e:
            log.warning(
                "metrics: the Prefect server's flow runs could not be read (%s: %s)", type(e).__name__, e
            )
            samples.append(Sample("etcd_dr_metric_errors", {"cluster": "", "source": "prefect"}, 1))
        if self.receiver is not None:
            with self.receiver.incidents.lock:
                open_ = set(self.receiver.incidents.open)
            samples += [Sample("etcd_dr_incidents_open", {"cluster": c}, 1 if c in open_ else 0)
                        for c in self.clusters]  # fmt: skip
            samples += [Sample("etcd_dr_receiver_requests_total", {"result": k}, v)
                        for k, v in sorted(self.receiver.counts.items())]  # fmt: skip
        return render(samples)
