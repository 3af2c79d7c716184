"""`etcd-dr rehearse` end to end on its own lab (3.4 voters, a 3.5 learner on node1), as the README's
main job runs it: build, data set, writer, fault, `recover --yes`, verify against the writer's log,
bring the hosts back, rejoin, report. The lab is the session's prefix and subnet (the rehearsal
rebuilds it with a learner and takes it down; `running_lab` rebuilds it for the tests after).

The all-voters-lost and all-lost tests are expected failures only while `recover` says their path
is not built yet (the status it returned, read from the report), never by a fixed skip."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .conftest import Lab, lab_config

pytestmark = pytest.mark.lab
TIMEOUT_S = 900  # lab up, data set, recovery with RKE's timings, rejoin; 2 shared cores


@pytest.fixture
def rehearsal_lab() -> Lab:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces, mounts, veths)")
    return Lab(lab_config(), Path("/usr/bin/etcdctl"))


def rehearse(lab: Lab, scenario: str, *extra: str) -> tuple[dict, int, float]:
    t = time.monotonic()
    r = lab.etcd_dr("rehearse", "--scenario", scenario, "--json", *extra, timeout=TIMEOUT_S)
    took = time.monotonic() - t
    assert r.stdout.strip(), f"no report on stdout (exit {r.returncode}): {r.stderr[-3000:]}"
    out = json.loads(r.stdout)
    print(f"{scenario}: {out['verdict']}")
    print(
        f"{scenario}: RTO {out['rto_s']} s (first write {out['first_write_s']} s), RPO {out['rpo_writes']}, "
        f"{out['acknowledged']} acknowledged, {out['unacknowledged_landed']} of {out['unacknowledged']} "
        f"unacknowledged landed; timings {out['timings']}; wall {took:.1f} s"
    )
    return out, r.returncode, took


def check_recovered(out: dict, paths: tuple[str, ...]) -> None:
    assert out["error"] is None, out["error"]
    assert out["recovery"]["status"] == "recovered", out["recovery"]
    assert out["recovery_path"] in paths
    assert out["lost_beyond_plan"] == 0, out["lost"]  # nothing lost the plan said it keeps
    assert out["dataset"]["present"] == out["dataset"]["keys"] > 0 or out["allowed_loss"]["rule"] != "none"
    assert out["acknowledged"] > out["dataset"]["keys"]  # the writer's writes, before and after
    # sane: after the fault completed, and within the recovery's own deadlines (2 elections of 5-10 s
    # with RKE's timings at most, observe and fencing bounded by the 3 s SSH connect timeout)
    assert 1.0 < out["rto_s"] < 120, out["rto_s"]
    assert out["rto_s"] >= out["first_write_s"] > 0


def check_rejoined(out: dict) -> None:
    rj = out["rejoin"]
    assert rj is not None
    assert rj["old_cluster_revived"] == [], f"an old cluster came back next to the recovered one: {rj}"
    assert rj["ok"], rj["verdict"]
    assert rj["voters"] >= 3 and rj["identical"], rj["members"]
    revs = {(m["revision"], m["keys"]) for m in rj["members"]}
    assert len(revs) == 1, rj["members"]


def test_masters_lost_rpo_zero_and_three_voters_again(rehearsal_lab: Lab) -> None:
    out, rc, _ = rehearse(rehearsal_lab, "masters-lost")
    check_recovered(out, ("voter-restore", "force-new-cluster"))
    assert out["rpo_writes"] == 0, out["lost"]  # a surviving voter keeps every acknowledged write
    assert out["dataset"] == {"keys": 500, "present": 500}
    assert out["recovery"]["recovered_on"] == "master3"
    check_rejoined(out)
    assert out["rejoin"]["voters"] == 3
    assert out["rejoin"]["not_members"] == []  # node1's learner, removed by the flag, is back too
    assert {m["host"] for m in out["rejoin"]["members"]} >= {"master1", "master2", "master3"}
    assert out["ok"] and rc == 0, out["verdict"]
    log = Path(out["log"])
    assert log.exists() and len(log.read_text().splitlines()) == out["acknowledged"] + out["unacknowledged"]


def test_all_voters_lost_recovered_from_the_learner(rehearsal_lab: Lab) -> None:
    out, rc, _ = rehearse(rehearsal_lab, "all-voters-lost")
    check_recovered(out, ("learner-restore",))
    assert out["recovery"]["recovered_on"] == "node1"
    assert out["allowed_loss"]["rule"] == "beyond-source"
    assert out["allowed_loss"]["after_revision"] == out["source_revision"] is not None
    check_rejoined(out)
    assert out["ok"] and rc == 0, out["verdict"]


def test_all_lost_restored_from_the_verified_snapshot(rehearsal_lab: Lab) -> None:
    out, rc, _ = rehearse(rehearsal_lab, "all-lost")
    check_recovered(out, ("snapshot-restore",))
    snap = out["snapshot"]
    assert snap["verified"] and out["allowed_loss"] == {
        "rule": "beyond-snapshot",
        "after_revision": snap["revision"],
        "why": f"snapshot {snap['id']} holds revision {snap['revision']}: writes after it",
    }
    assert out["recovery"]["recovered_on"] == "master1"
    # the writer wrote on after the snapshot: those writes are lost, and the report says so
    assert out["rpo_writes"] == out["lost_within_plan"] > 0
    check_rejoined(out)
    assert out["ok"] and rc == 0, out["verdict"]


def test_a_fork_after_a_restore_fails_the_rehearsal(rehearsal_lab: Lab) -> None:
    """--voter-method restore gives master3 a new cluster id; master1 and master2, back together,
    lead their old cluster: a fork. The rehearsal must fail with the sentence `status` says."""
    out, rc, _ = rehearse(
        rehearsal_lab, "masters-lost", "--voter-method", "restore", "--return", "together", "--keys", "100"
    )
    check_recovered(out, ("voter-restore",))
    fork = out["rejoin"]["fork"]
    assert fork and fork.startswith("forked: the members form 2 clusters: "), out["rejoin"]
    assert "leader master3" in fork
    assert not out["ok"] and rc == 1
    assert f"FORK after the lost hosts came back: {fork}" in out["verdict"]


def test_the_source_incident_end_to_end(rehearsal_lab: Lab) -> None:
    """`rehearse --scenario incident --json` (the README's main job): power lost on every master with
    kubelet on node2 in its sandbox loop, node1's learner restored (never --force-new-cluster on it),
    Kubernetes back through external etcd, the loop cleaned, the masters rejoined one by one, master1's
    certificate dated ahead found by `hosts clock` and renewed; every phase ok, every object back."""
    out, rc, took = rehearse(rehearsal_lab, "incident")
    for p in out["phases"]:
        print(f"  {p['phase']:<12} {p['ok']!s:<5} {p['duration_s']} s  {p['sentence'][:150]}")
    failed = [p for p in out["phases"] if not p["ok"]]
    assert [p["phase"] for p in out["phases"]] == [
        "lab", "dataset", "fault", "recover", "verify", "kubernetes", "kubelet", "rejoin", "certificate",
    ] and not failed, failed  # fmt: skip
    check_recovered(out, ("learner-restore",))
    inc = out["incident"]
    assert out["recovery"]["recovered_on"] == "node1" and inc["force_new_cluster_on_learner"] == []
    assert out["allowed_loss"]["rule"] == "beyond-source" and out["lost_beyond_plan"] == 0  # RPO in plan
    k = out["kubernetes"]
    assert k["status"] == "restored" and k["decision"] == "external-etcd"
    assert k["ready"] == {"node1": {"ready": True, "said": None}}  # /readyz on the controlplane host
    assert k["objects_after"] == k["objects_before"] > 0  # every /registry object back
    assert out["rto_s"] < out["rto_api_s"], (out["rto_s"], out["rto_api_s"])
    assert inc["kubelet"]["looped"] and len(inc["kubelet"]["removed"]) == 1, inc["kubelet"]
    cert = inc["certificate"]
    assert cert["ok"] and cert["clock_skewed"] == [] and "is before" in cert["found"]["problem"], cert
    check_rejoined(out)
    assert {m["host"] for m in out["rejoin"]["members"]} == {"master1", "master2", "master3", "node1"}
    plans = [a["plan"] for a in out["approvals"]]
    assert plans == ["recover", "kubernetes", "kubelet-cleanup", "cert-renew"], out["approvals"]
    assert out["ok"] and rc == 0, out["verdict"]
    assert out["verdict"].startswith("incident: every phase ok")
    assert took < 600, took  # the CI budget: lab up to lab down, on 2 shared cores
