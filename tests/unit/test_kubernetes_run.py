"""`restore-kubernetes` (etcd_dr.kubernetes.run and plan.restore_plan) on RKE fixtures, with the
cluster's picture built by assess() (observe faked). The plan's steps for each decision; --plan and
a refused decision change nothing; the journal: a failed run is resumed, not decided again. The
steps' handlers are replaced by recording fakes only in the journal tests (what each step does on a
host is tested on the lab: tests/lab/test_kubernetes_lab.py, test_restore_kubernetes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_kubernetes_clockgate import fake_clocks
from test_kubernetes_cluster_yml import cli_inventory
from test_kubernetes_plan import client_pem, imported, picture

from etcd_dr.cli import main
from etcd_dr.errors import EtcdDrError
from etcd_dr.inventory import load_inventory
from etcd_dr.kubernetes import decide as decide_mod
from etcd_dr.kubernetes import run as run_mod
from etcd_dr.kubernetes.plan import RETIRED_ETCD, RestoreFiles, plan_kubernetes, restore_plan
from etcd_dr.kubernetes.run import KubernetesStatus, restore_kubernetes
from etcd_dr.kubernetes.steps import ApiCheckParams, EtcdOnSslOldParams, KubernetesAction, RkeUpParams
from etcd_dr.plans import Step

FILES = RestoreFiles("/x/cluster.recovered.yml", "/x/cluster.recovered.rkestate", "cluster.recovered.yml")
COUNTS = {"/registry/pods/": 15, "/registry/secrets/": 7}


def test_masters_lost_plan_moves_master3_onto_ssl_old_and_checks_it(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = picture(inv, members=["master3"], up=["master3"], leader="master3")
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    plan = restore_plan(d, st, inv, cfg, FILES, COUNTS, counted="recorded before the fault")
    assert [s.id for s in plan.steps] == [
        "ssl-old:master3",
        "etcd-on-ssl-old:master3",
        "rke-files",
        "rke-up",
        "api-check",
    ]
    assert plan.reason.startswith("surviving-plane: the recovered etcd (master3) overlaps")
    assert [s.id for s in plan.steps if s.destructive] == ["etcd-on-ssl-old:master3", "rke-up"]
    move = plan.steps[1].typed(EtcdOnSslOldParams)
    assert (move.cert_dir, move.old_dir, move.retired) == (
        "/etc/kubernetes/ssl",
        "/etc/kubernetes/ssl_old",
        RETIRED_ETCD,
    )
    up = plan.steps[3].typed(RkeUpParams)
    assert plan.steps[3].host == inv.rke.deploy_host  # type: ignore[union-attr]
    assert up.config_name == "cluster.recovered.yml" and up.remote_dir == "/opt/rke"
    api = plan.steps[4].typed(ApiCheckParams)
    assert api.hosts == ("master3",) and api.endpoints == ("https://10.231.0.13:2379",)
    assert dict(api.expected) == COUNTS and api.ca_path == "/etc/kubernetes/ssl/kube-ca.pem"


def test_all_voters_lost_plan_moves_node1_and_checks_the_api_there(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    st = picture(inv, members=["node1"], up=["node1"], leader="node1")
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    plan = restore_plan(d, st, inv, cfg, FILES, COUNTS, counted="c")
    assert plan.reason.startswith("external-etcd: ")
    assert [s.host for s in plan.steps[:2]] == ["node1", "node1"]
    api = plan.steps[-1].typed(ApiCheckParams)
    # the masters keep controlplane in cluster.yml but are dead: RKE drops them, the API is on node1
    assert api.hosts == ("node1",) and api.endpoints == ("https://10.231.0.21:2379",)


def test_a_refused_decision_is_a_refused_plan_with_its_fix(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = picture(inv, members=["master1", "master2", "master3"], up=["master3"], leader=None)
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    plan = restore_plan(d, st, inv, cfg, FILES, {}, counted="")
    assert plan.refused and not plan.steps
    assert "recover etcd first (`etcd-dr recover`)" in plan.reason
    assert "(rke up would end in: etcdserver: request timed out)" in plan.reason


def lab_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: list[str], leader: str | None):
    """An imported inventory with an audit log and recorded counts; observe faked."""
    inv_path = cli_inventory(tmp_path)
    inv_path.write_text(inv_path.read_text() + "audit_log: audit.jsonl\n")
    (inv_path.parent / "registry-counts.json").write_text(json.dumps(COUNTS))
    inv = load_inventory(inv_path)
    st = picture(inv, members=members, up=["master3"], leader=leader)
    monkeypatch.setattr(decide_mod, "observe", lambda inv, **kw: st)
    fake_clocks(monkeypatch)
    return inv_path, inv


def test_cli_plan_changes_nothing_and_a_refusal_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_path, inv = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    assert main(["restore-kubernetes", "--plan", "-i", str(inv_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["status"] == "planned" and got["decision"]["decision"] == "surviving-plane"
    assert got["objects"]["per_resource"]["/registry/pods/"] == {"before": 15, "after": None}
    assert "registry-counts.json" in got["objects"]["counted"]
    assert "-    hostname_override: master1" in got["diff"]
    assert not (tmp_path / "rke/cluster.recovered.yml").exists()  # --plan writes nothing
    assert not run_mod.journal_path(inv).exists()
    # the same command under its other name, as text: the plan and the diff
    assert main(["kubernetes", "up", "--plan", "-i", str(inv_path)]) == 0
    out = capsys.readouterr().out
    assert "5. check /readyz on master3 and the 22 objects under /registry" in out
    # no --yes and no terminal: not confirmed (2), nothing written
    assert main(["restore-kubernetes", "-i", str(inv_path), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["status"] == "not-confirmed"
    assert not (tmp_path / "rke/cluster.recovered.yml").exists()

    inv_path, _ = lab_like(tmp_path / "b", monkeypatch, ["master1", "master2", "master3"], None)
    assert main(["restore-kubernetes", "--yes", "-i", str(inv_path), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["status"] == "refused" and got["decision"]["refusal"]["constant"] == "REQUEST_TIMED_OUT"
    assert "recover etcd first" in got["reason"] and got["steps"] == []
    assert not (tmp_path / "b/rke/cluster.recovered.yml").exists()


class Fake:
    """A step handler that records what ran; `fail` names a step id that raises."""

    def __init__(self, log: list[str], fail: set[str]) -> None:
        self.log, self.fail, self.done_ids = log, fail, set()

    def done(self, step: Step) -> bool:
        return step.id in self.done_ids

    def run(self, step: Step) -> str:
        self.log.append(step.id)
        if step.id in self.fail:
            raise EtcdDrError(f"{step.id} broke")
        self.done_ids.add(step.id)
        return "ok"


def test_a_failed_run_is_resumed_from_its_journal_not_decided_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, inv = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    log: list[str] = []
    fake = Fake(log, {"rke-up"})
    monkeypatch.setattr(run_mod, "handlers", lambda c: {str(a): fake for a in KubernetesAction})
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=lambda _m: None)
    assert res.status is KubernetesStatus.FAILED and "rke-up broke" in res.reason
    assert "run `etcd-dr restore-kubernetes` again to resume" in res.reason
    assert (tmp_path / "rke/cluster.recovered.yml").exists()  # written once confirmed
    j = json.loads(run_mod.journal_path(inv).read_text())
    assert j["started"] == ["etcd-on-ssl-old:master3", "rke-up"]

    def no_decide(*a, **kw):
        raise AssertionError("a journalled plan is resumed, not decided again")

    monkeypatch.setattr(run_mod, "decide", no_decide)
    fake.fail.clear()
    said: list[str] = []
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=said.append)
    assert res.status is KubernetesStatus.RESTORED and res.resumed, res.reason
    assert log == [
        "ssl-old:master3",
        "etcd-on-ssl-old:master3",
        "rke-files",
        "rke-up",
        "rke-up",
        "api-check",
    ]  # what was done is skipped
    assert any(s.startswith("resuming the unfinished restore") for s in said)
    assert not run_mod.journal_path(inv).exists() and res.journal and res.journal.endswith(".done.json")
    audit = [json.loads(ln) for ln in (tmp_path / "rke/etcd-dr/audit.jsonl").read_text().splitlines()]
    assert [a["outcome"] for a in audit if a["action"] == "restore-kubernetes"] == ["failed", "restored"]


def test_a_journal_with_no_destructive_step_begun_is_closed_and_decided_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, inv = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    fake = Fake([], {"ssl-old:master3"})
    monkeypatch.setattr(run_mod, "handlers", lambda c: {str(a): fake for a in KubernetesAction})
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=lambda _m: None)
    assert res.status is KubernetesStatus.FAILED
    fake.fail.clear()
    said: list[str] = []
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=said.append)
    assert res.status is KubernetesStatus.RESTORED and not res.resumed
    assert any("none of its destructive steps had begun" in s for s in said)
    assert len(list((tmp_path / "rke/etcd-dr").glob("kubernetes-*.closed.json"))) == 1


def test_the_rehearsal_verdict_names_the_api_rto_or_fails_without_it() -> None:
    from test_rehearse import PATHS, REC, _measures, _rejoined

    from etcd_dr.lab.rehearsal.measure import AllowedLoss
    from etcd_dr.lab.rehearsal.report import KubernetesFacts, judge
    from etcd_dr.lab.rehearsal.scenarios import Scenario

    back = KubernetesFacts(
        "restored", "surviving-plane", "r", {"master3": None}, COUNTS, COUNTS, "recorded", 31.25
    )
    args = (Scenario.MASTERS_LOST, PATHS, REC, _measures(), AllowedLoss.none(), _rejoined())
    ok, s = judge(*args, kubernetes=back)
    assert (
        ok
        and (
            "Kubernetes back (surviving-plane): RTO to a ready API 31.2 s, /readyz ok on master3, "
            "22 objects under /registry"
        )
        in s
    )
    assert back.to_json()["per_resource"]["/registry/pods/"] == {"before": 15, "after": 15}
    broke = KubernetesFacts("failed", "surviving-plane", "rke up on node2 failed", {}, COUNTS, {}, "c", None)
    ok, s = judge(*args, kubernetes=broke)
    assert not ok and "Kubernetes NOT back: restore-kubernetes failed: rke up on node2 failed" in s


def test_a_second_run_while_one_holds_the_lock_is_busy_and_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    _, inv = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    jpath = run_mod.journal_path(inv)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    with open(jpath.with_suffix(".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run's lock (flock: per open file)
        res = restore_kubernetes(inv, yes=True, plan_only=False, say=lambda _m: None)
    assert res.status is KubernetesStatus.BUSY and "another restore-kubernetes" in res.reason
    assert not (tmp_path / "rke/cluster.recovered.yml").exists() and not jpath.exists()


def test_an_inventory_without_rke_files_is_bad_input_before_any_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.inventory_sample import VALID, write_invdir

    def no_look(*a, **kw):
        raise AssertionError("nothing is observed for bad input")

    monkeypatch.setattr(decide_mod, "observe", no_look)
    d = write_invdir(tmp_path)
    (d / "inventory.yaml").write_text(VALID)
    assert main(["restore-kubernetes", "--yes", "-i", str(d / "inventory.yaml")]) == 2
    err = capsys.readouterr().err
    assert "rke: the inventory has no rke: section" in err and "import-rke" in err
    assert not list(d.glob("kubernetes-*"))


def test_a_resume_after_etcd_changed_under_the_plan_is_refused_saying_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume with "changed since": the journal records the picture the plan was made on; a resume
    on a cluster whose voters changed (here master1 joined back: another hand's work) is refused,
    its journal closed (moved aside), nothing run, the sentence naming the change and the fix."""
    _, inv = lab_like(tmp_path, monkeypatch, ["master3"], "master3")
    log: list[str] = []
    fake = Fake(log, {"rke-up"})
    monkeypatch.setattr(run_mod, "handlers", lambda c: {str(a): fake for a in KubernetesAction})
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=lambda _m: None)
    assert res.status is KubernetesStatus.FAILED
    basis = json.loads(run_mod.journal_path(inv).read_text())["basis"]
    assert basis["quorum"] is True and basis["leader"] == "master3" and list(basis["voters"]) == ["master3"]
    changed = picture(inv, members=["master1", "master3"], up=["master1", "master3"], leader="master3")
    monkeypatch.setattr(decide_mod, "observe", lambda inv, **kw: changed)
    fake.fail.clear()
    ran = len(log)
    res = restore_kubernetes(inv, yes=True, plan_only=False, say=lambda _m: None)
    assert res.status is KubernetesStatus.STALE and res.resumed and not res.ok
    assert res.reason.startswith("the cluster changed since this plan was made: the voters are now master1 (")
    assert "steps it had begun: etcd-on-ssl-old:master3, rke-up" in res.reason
    assert "run `etcd-dr restore-kubernetes` again to decide from what the cluster is now" in res.reason
    assert len(log) == ran  # nothing ran
    assert not run_mod.journal_path(inv).exists() and res.journal and res.journal.endswith(".closed.json")
    assert main(["restore-kubernetes", "--yes", "-i", str(inv.source), "--json"]) == 0  # decided afresh
