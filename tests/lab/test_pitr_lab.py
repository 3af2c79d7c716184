"""Point-in-time recovery on the real lab: `etcd-dr backup stream` follows the cluster while a writer
writes, every master is powered off, `etcd-dr recover` rolls the newest verified snapshot forward
through the delta log and restores it: every acknowledged write up to the last revision on record
is back, at the same revisions, and what is lost is only what was acknowledged after it. The
watcher then goes on on the restored cluster (restored from the log's end)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from etcd_dr.deltalog import DeltaLog
from etcd_dr.deltalog.service import log_dir_for
from etcd_dr.deltalog.stream import read_status
from etcd_dr.etcd.localcluster import wait_for
from etcd_dr.inventory import load_inventory
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import one, sh

pytestmark = pytest.mark.lab


def test_all_lost_with_the_delta_log_loses_only_writes_after_the_last_revision_on_record(
    running_lab: Lab,
) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    log_dir = log_dir_for(inv)
    if log_dir.exists():  # an earlier test's log follows another cluster: set aside, kept
        log_dir.rename(log_dir.with_name(f"deltalog.old-{time.time_ns()}"))
    with client_for(inv) as c:
        for i in range(200):
            c.put(f"/pitr-lab/k{i:04d}", f"v{i}")
    r, _ = cli(lab, "snapshot", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    stream = subprocess.Popen(
        [sys.executable, "-m", "etcd_dr.cli", "backup", "stream", "--segment-max-age", "2", "--json"],
        env=lab.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    acked: list[tuple[int, str, str, float]] = []  # revision, key, value, when acknowledged
    stop = threading.Event()

    def writer() -> None:
        with client_for(inv, request_timeout=2.0, dial_timeout=0.5) as w:
            i = 0
            while not stop.is_set():
                k, v = f"/pitr-lab/w{i:05d}", f"x{i}"
                try:
                    rev = w.put(k, v, timeout=2.0).revision
                except Exception:
                    return
                acked.append((rev, k, v, time.time()))
                i += 1

    try:
        wait_for(
            "the watcher", lambda: (s := read_status(log_dir)) is not None and s.state == "streaming", 30
        )
        first_cluster_id = read_status(log_dir).cluster_id
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(3.0)
        t_fault = time.time()
        for h in ("master1", "master2", "master3"):
            assert lab.cli("power", h, "off").returncode == 0
        t_lost = time.time()  # by now quorum is lost (two voters off)
        t.join(30)
        stop.set()
        wait_for("the watcher waiting", lambda: read_status(log_dir).state == "waiting", 60)
        last = DeltaLog(log_dir).last_revision()
        assert last is not None
        # master1 comes back, but its etcd does not (a host rebuilt): nothing answers 2379
        assert lab.cli("power", "master1", "on").returncode == 0
        sh(
            lab,
            "master1",
            "docker update --restart=no etcd >/dev/null && docker kill etcd >/dev/null || true",
        )

        r, wall = cli(lab, "recover", "--yes", "--json", timeout=300)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        assert out["status"] == "recovered" and out["path"] == "snapshot-restore"
        assert f"-deltalog-{last} (newest verified, revision {last}" in out["reason"]
        assert f"may lose the writes after revision {last} (the last one on record, " in out["reason"]
        print(f"\nall-lost with the delta log: recover {wall:.2f} s wall; {out['reason']}")
        # the watcher sees the restored cluster: another cluster id, but restored from the log's
        # end (it holds revision `last` as the log does): the log goes on, the next write in it
        with client_for(inv) as c:
            after = c.put("/pitr-lab/after-recovery", "yes").revision
        wait_for("the log on the new cluster", lambda: (DeltaLog(log_dir).last_revision() or 0) >= after, 60)
        st = read_status(log_dir)
        assert st.state == "streaming" and st.cluster_id != first_cluster_id
        assert [r.revision for r in DeltaLog(log_dir).records(last - 5)] == list(range(last - 5, after + 1))
    finally:
        stop.set()
        stream.send_signal(signal.SIGTERM)
        so, se = stream.communicate(timeout=30)
    assert stream.returncode == 0 and json.loads(so)["state"] == "stopped", se

    with one(inv, "master1") as m1:
        restored = {kv.key.decode(): (kv.value.decode(), kv.mod_revision) for kv in
                    m1.range("/pitr-lab/w", "/pitr-lab/x").kvs}  # fmt: skip
        # the restored cluster went on from the original's last revision on record: the recovery's
        # probe write, then this test's, are the next two revisions (never lower)
        assert m1.range("/pitr-lab/none").header.revision == after == last + 2
    kept = [a for a in acked if a[0] <= last]
    lost = [a for a in acked if a[0] > last]
    for rev, k, v, _ in kept:
        assert restored.get(k) == (v, rev), f"{k} acknowledged at revision {rev} is not back as it was"
    after_snapshot = [a for a in acked if a[0] > snap["revision"]]
    print(
        f"acknowledged {len(acked)} writes, {len(after_snapshot)} after the snapshot; lost {len(lost)} "
        f"(revisions {lost[0][0] if lost else '-'}..{lost[-1][0] if lost else '-'}); "
        f"fault at +0, quorum lost by +{t_lost - t_fault:.2f} s; last write acknowledged at "
        f"+{(acked[-1][3] - t_fault) if acked else 0:.2f} s"
    )
    assert len(kept) > 0 and len(after_snapshot) > 100
    # what is lost was acknowledged within a second of the quorum loss, never earlier
    assert all(when >= t_fault - 1.0 for _, _, _, when in lost), lost[:3]
