"""etcd_dr.recovery.run and etcd_dr.recovery.steps without hosts: the argument rewrite, the journal, and
the decisions recover() takes before it executes anything."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from etcd_dr.cli.result import exit_for
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Outcome, Plan, Step, StepResult, StepState
from etcd_dr.recovery import run as R
from etcd_dr.recovery.incident import Incident
from etcd_dr.recovery.lease import Holder
from etcd_dr.recovery.plan import FORCE_FLAG, Probe
from etcd_dr.recovery.steps import (
    CopyParams,
    FenceCheckParams,
    RecoveryAction,
    RunParams,
    StopParams,
    recovery_args,
)
from etcd_dr.runtime import MemberStatus

OLD = [
    "--name=etcd-master3",
    "--data-dir=/var/lib/rancher/etcd",
    "--initial-cluster=etcd-master1=https://10.0.0.1:2380,etcd-master3=https://10.0.0.3:2380",
    "--initial-cluster-state=existing",
    "--election-timeout=5000",
]
ME = "etcd-master3=https://10.0.0.3:2380"


def test_recovery_args_keep_everything_but_the_cluster_flags() -> None:
    new = recovery_args(OLD, ME, [FORCE_FLAG])
    assert new == [
        "--name=etcd-master3",
        "--data-dir=/var/lib/rancher/etcd",
        f"--initial-cluster={ME}",
        "--initial-cluster-state=new",
        "--election-timeout=5000",
        FORCE_FLAG,
    ]
    # the forced member's arguments give the plain ones back: the flag never survives a rewrite
    assert recovery_args(new, ME) == new[:-1]


def test_recovery_args_two_token_form_and_missing_flags() -> None:
    assert recovery_args(["--name=x", "--initial-cluster", "a=b,c=d", FORCE_FLAG], ME) == [
        "--name=x",
        f"--initial-cluster={ME}",
        "--initial-cluster-state=new",
    ]
    assert recovery_args(["--name=x"], ME) == [
        "--name=x",
        f"--initial-cluster={ME}",
        "--initial-cluster-state=new",
    ]


RUN = RunParams(
    runtime="docker", name="etcd", image="lab/etcd:3.4.23", binary="/usr/bin/etcd",
    data_dir="/var/lib/etcd", endpoint="https://10.0.0.3:2379", member="etcd-m3",
    initial_cluster="etcd-m3=https://10.0.0.3:2380", extra_flags=(FORCE_FLAG,), args=("--a",),
    restart="no", image_from="etcd-old-1",
)  # fmt: skip


STOP = StopParams(
    runtime="docker", name="etcd", image="lab/etcd:3.4.23", binary="/usr/bin/etcd",
    data_dir="/var/lib/etcd", endpoint="https://10.0.0.3:2379", timeout_s=30, sync_leader=True,
    sync_key="/etcd-dr/recovery/wal-sync-1",
)  # fmt: skip
COPY = CopyParams(src="/d", dst="/d.bak")
FENCE = FenceCheckParams(hosts=("m1", "m2"), ports=(2379, 2380), evidence={})


def _plan() -> Plan:
    step = Step("etcd-run:m3", RecoveryAction.RUN, "m3", "start", "runs", "why", True, RUN)
    return Plan("recover", "c1", "quorum lost: ...", (step,))


def test_plan_round_trips_through_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "recover-c1.json"
    R._write_journal(path, _plan(), INC)
    back = R.load_journal(path, "c1")
    assert back is not None and back.plan.to_json() == _plan().to_json()
    assert back.incident == INC and back.started == ()
    R._mark_started(path, "etcd-run:m3")
    R._mark_started(path, "etcd-run:m3")
    assert R.load_journal(path, "c1").started == ("etcd-run:m3",)  # type: ignore[union-attr]
    with pytest.raises(R.InputError, match="journal of cluster 'c1', not 'c2'"):
        R.load_journal(path, "c2")
    path.write_text("{not json")
    with pytest.raises(R.InputError, match="unreadable"):
        R.load_journal(path, "c1")
    assert R.load_journal(tmp_path / "none.json", "c1") is None
    # a journal written before incidents were recorded: every step counts as begun (resumed as before)
    path.write_text(json.dumps({"cluster": "c1", "plan": _plan().to_json()}))
    old = R.load_journal(path, "c1")
    assert old is not None and old.incident is None and old.started == ("etcd-run:m3",)


INC = Incident(
    id="inc1",
    cluster="c1",
    target="m3",
    target_member_id=3,
    target_index=100,
    cluster_id=7,
    voter_ids=(1, 2, 3),
    answering=("m3",),
    observed_at="2026-12-05T00:00:00+00:00",
    verdict="quorum lost: 1 of 3 voters reachable",
)


def _inv(tmp_path: Path) -> Inventory:
    class FakeInv:
        cluster = "c1"
        audit_log = tmp_path / "audit.jsonl"
        voters = ()

        def state_path(self, name: str) -> Path:
            return tmp_path / name

    return FakeInv()  # type: ignore[return-value]


def _patch(
    monkeypatch: pytest.MonkeyPatch,
    plan: Plan,
    *,
    changed: str | None = None,
    healthy: str | None = None,
    under: str | None = None,
    holder: Holder | None = None,
    execute=None,
) -> list[str]:
    """recover() with its I/O replaced: observe, fencing, the pure checks and the cluster lease
    recorded in `calls`; execute() fails the test unless given."""
    calls: list[str] = []

    class State:
        verdict = "quorum lost"
        quorum = False
        members = ()

    class Lease:
        def acquire(self):
            calls.append("lease")
            return holder

        def release(self):
            calls.append("release")

        def renew_if_due(self):
            pass

    monkeypatch.setattr(R, "observe", lambda inv, **kw: calls.append("observe") or State())
    monkeypatch.setattr(R, "gather", lambda inv, hosts, **kw: {})
    monkeypatch.setattr(R, "probe", lambda inv, hosts, **kw: Probe())
    monkeypatch.setattr(R, "powered_off", lambda inv, hosts: {})
    monkeypatch.setattr(R, "plan_recovery", lambda state, inv, **kw: calls.append("plan") or plan)
    monkeypatch.setattr(R, "audit_log_for", lambda inv: None)
    monkeypatch.setattr(R, "_catalog", lambda inv: [])
    monkeypatch.setattr(R, "_quick_ssh", lambda inv: inv)
    monkeypatch.setattr(R.Incident, "of", classmethod(lambda cls, p, s: INC))
    monkeypatch.setattr(R, "changed_since", lambda inc, fresh: changed)
    monkeypatch.setattr(R, "healthy_without", lambda inc, fresh: healthy)
    monkeypatch.setattr(R, "changed_under", lambda inc, fresh, **kw: under)
    monkeypatch.setattr(R, "_cluster_lease", lambda *a: Lease())

    def fake_execute(p, handlers, **kw):
        calls.append("execute")
        if execute is None:
            raise AssertionError("must not execute")
        return execute(p, **kw)

    monkeypatch.setattr(R, "execute", fake_execute)
    monkeypatch.setattr(R, "handlers", lambda c: {})
    return calls


def test_a_second_recovery_of_the_cluster_is_refused_while_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("copy-db:n1", "copy-file", "n1", "copy", "copied", "why", params=COPY)
    calls = _patch(monkeypatch, Plan("recover", "c1", "learner", (step,)))
    with open(tmp_path / "recover-c1.lock", "a") as held:  # what a running recovery holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.BUSY and exit_for(res) == 1
    assert res.reason.startswith("another recovery of cluster c1 is running")
    assert not calls and not (tmp_path / "recover-c1.json").exists()
    # released (the holder ended, even by SIGKILL: the kernel drops the lock): the next one acts
    calls = _patch(monkeypatch, Plan("recover", "c1", "learner", (step,)))
    with pytest.raises(AssertionError, match="must not execute"):
        R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert calls == ["observe", "plan", "lease", "observe", "execute", "release"]


def test_a_recovery_started_elsewhere_holds_the_cluster_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8: two operators with two copies of the inventory share only the cluster."""
    step = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    other = Holder("m3", "ctl-bob", "bob@laptop pid 42, incident 77aa", 590)
    calls = _patch(monkeypatch, Plan("recover", "c1", "quorum lost", (step,)), holder=other)
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.BUSY and exit_for(res) == 1
    assert res.reason == (
        "another recovery of cluster c1 holds it: m3 is leased to another recovery (bob@laptop pid 42, "
        "incident 77aa) for another 590 s; nothing was done: wait for it, then check `etcd-dr status`"
    )
    assert "execute" not in calls and not (tmp_path / "recover-c1.json").exists()


def test_an_approval_given_after_the_cluster_changed_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: the fresh look after the approval (and under the lease) finds the plan stale."""
    step = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    calls = _patch(
        monkeypatch,
        Plan("recover", "c1", "quorum lost", (step,)),
        changed="quorum is held again (quorum held)",
    )
    res = R.recover(_inv(tmp_path), yes=False, plan_only=False, say=lambda m: None, confirm=lambda p: True)
    assert res.status is R.RecoverStatus.STALE and exit_for(res) == 1
    assert res.reason == (
        "the cluster changed since this plan was made: quorum is held again (quorum held); nothing was "
        "done: run `etcd-dr recover` again to plan from what the cluster is now"
    )
    assert calls == ["observe", "plan", "lease", "observe", "release"]
    assert not list(tmp_path.glob("recover-c1*.json"))


def test_refused_and_unconfirmed_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _patch(
        monkeypatch, Plan("recover", "c1", "quorum held: 3 of 3; nothing to recover", refused=True)
    )
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.REFUSED and exit_for(res) == 1
    assert res.reason == "quorum held: 3 of 3; nothing to recover"

    step = Step("force-new-cluster:m3", "etcd-run", "m3", "force", "runs", "why", params=RUN)
    calls += _patch(monkeypatch, Plan("recover", "c1", "quorum lost", (step,)))
    res = R.recover(_inv(tmp_path), yes=False, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.NOT_CONFIRMED and exit_for(res) == 2
    res = R.recover(_inv(tmp_path), yes=False, plan_only=False, say=lambda m: None, confirm=lambda p: False)
    assert res.status is R.RecoverStatus.NOT_CONFIRMED
    res = R.recover(_inv(tmp_path), yes=False, plan_only=True, say=lambda m: None)
    assert res.status is R.RecoverStatus.PLANNED and exit_for(res) == 0
    assert json.loads(json.dumps(res.to_json()))["path"] == "force-new-cluster"
    assert "lease" not in calls and "execute" not in calls
    assert not (tmp_path / "recover-c1.json").exists()


def test_an_unfinished_recovery_is_resumed_not_planned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("force-new-cluster:m3", "etcd-run", "m3", "force", "runs", "why", True, RUN)
    journalled = Plan("recover", "c1", "quorum lost (journalled)", (step,))
    R._write_journal(tmp_path / "recover-c1.json", journalled, INC, started=[step.id])
    calls = _patch(monkeypatch, Plan("recover", "c1", "quorum held", refused=True))
    res = R.recover(_inv(tmp_path), yes=False, plan_only=True, say=lambda m: None)
    assert res.resumed and res.plan.reason == "quorum lost (journalled)"
    assert "plan" not in calls


def test_a_journal_nothing_of_which_was_done_is_closed_and_planned_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a failed run's journal is not resumed for a different incident."""
    step = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    R._write_journal(tmp_path / "recover-c1.json", Plan("recover", "c1", "old: force m3", (step,)), INC)
    calls = _patch(monkeypatch, Plan("recover", "c1", "new: force m2", (step,)))
    res = R.recover(_inv(tmp_path), yes=False, plan_only=True, say=lambda m: None)
    assert not res.resumed and res.plan.reason == "new: force m2" and "plan" in calls
    assert not (tmp_path / "recover-c1.json").exists()
    assert len(list(tmp_path.glob("recover-c1-*.closed.json"))) == 1


def test_a_resumed_journal_of_a_cluster_healthy_again_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    R._write_journal(tmp_path / "recover-c1.json", Plan("recover", "c1", "force m3", (step,)), INC, [step.id])
    calls = _patch(
        monkeypatch, Plan("recover", "c1", "unused", ()), healthy="the cluster is healthy again without this"
    )
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.STALE and res.resumed
    assert res.reason.startswith("the cluster is healthy again without this: this recovery's journal is")
    assert "(steps it had begun: stop:m3)" in res.reason
    assert "lease" not in calls and "execute" not in calls
    assert (
        not (tmp_path / "recover-c1.json").exists() and res.journal and res.journal.endswith(".closed.json")
    )


def _fails_at(step_id: str):
    def run(plan, run_step, **kw):
        results = []
        for s in plan.steps:
            if results and results[-1].state is StepState.FAILED:
                results.append(StepResult(s, StepState.NOT_RUN))
                continue
            state = StepState.FAILED if s.id == step_id else StepState.DONE
            results.append(
                run_step(
                    s,
                    lambda s=s, state=state: StepResult(s, state, 0.0, "boom" if state == "failed" else None),
                )
            )
        return Outcome(plan, tuple(results))

    return run


@pytest.mark.parametrize(("fails", "kept"), [("fence-check", False), ("stop:m3", True)])
def test_a_failed_run_keeps_its_journal_only_once_it_changed_something(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str, kept: bool
) -> None:
    fence = Step("fence-check", "fence-check", None, "check fencing", "fenced", "why", params=FENCE)
    stop = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    _patch(monkeypatch, Plan("recover", "c1", "quorum lost", (fence, stop)), execute=_fails_at(fails))
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.FAILED
    assert (tmp_path / "recover-c1.json").exists() is kept
    if kept:
        assert R.load_journal(tmp_path / "recover-c1.json", "c1").started == ("stop:m3",)  # type: ignore[union-attr]
        assert res.reason.endswith("run `etcd-dr recover` again to resume this plan")
    else:
        assert "nothing was changed (no destructive step had begun)" in res.reason


def test_a_bad_target_is_refused_before_any_host_is_contacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_recovery import INV

    monkeypatch.setattr(R, "observe", lambda inv: pytest.fail("observed before checking the input"))
    with pytest.raises(R.InputError, match="nosuchhost"):
        R.recover(INV, yes=True, plan_only=True, target="nosuchhost")
    with pytest.raises(R.InputError, match="node1 is not an etcd voter"):
        R.recover(INV, yes=True, plan_only=True, target="node1")


class _Ran:
    ok = True
    stdout = ""
    stderr = ""
    rc = 0


class _FakeHost:
    """What CopyDir and CopyFile ask of a host and of the member runtime, recorded."""

    def __init__(self, running: bool) -> None:
        self.running = running
        self.commands: list[list[str]] = []

    def run(self, argv, **kw):
        self.commands.append(list(argv))
        return _Ran()

    def is_running(self) -> bool:
        return self.running

    def statuses(self, *names: str) -> dict[str, MemberStatus]:
        return {n: MemberStatus(n, True, self.running) for n in names}


def _ctx(plan: Plan, host: _FakeHost):
    from etcd_dr.recovery.steps import Ctx

    c = Ctx.__new__(Ctx)
    c.plan = plan
    c.executor = lambda h: host  # type: ignore[method-assign]
    c.runtime = lambda h, name: host  # type: ignore[method-assign]
    return c


@pytest.mark.parametrize("action", ["copy-dir", "copy-file"])
def test_a_data_dir_is_not_copied_while_the_member_runs_again(action: str) -> None:
    from etcd_dr.recovery.steps import RecoveryStepError, handlers

    stop = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    copy = Step(f"{action}:m3", action, "m3", "copy", "copied", "why", False, COPY)
    plan = Plan("recover", "c1", "quorum lost", (stop, copy))
    host = _FakeHost(running=True)  # restarted by someone since the stop
    with pytest.raises(RecoveryStepError, match="etcd runs again: its data dir is not quiet"):
        handlers(_ctx(plan, host))[action].run(copy)
    assert not any(c[:2] == ["sh", "-c"] for c in host.commands)  # nothing copied
    host = _FakeHost(running=False)
    handlers(_ctx(plan, host))[action].run(copy)
    assert any(c[:2] == ["sh", "-c"] for c in host.commands)


# --- typed params through the journal ------------------------------------------------------------

# a journal as etcd-dr wrote it before step params were typed (plain dicts, actions as strings)
OLD_JOURNAL = {
    "cluster": "c1",
    "started_at": 1.0,
    "incident": None,
    "started": ["stop:m3"],
    "plan": {
        "kind": "recover",
        "cluster": "c1",
        "reason": "quorum lost: 1 of 3 voters reachable",
        "refused": False,
        "refusal": None,
        "params": {"path": "force-new-cluster"},
        "steps": [
            {
                "id": "fence-check", "action": "fence-check", "host": None, "description": "check",
                "postcondition": "fenced", "reason": "why", "destructive": False, "holds": False, "runs": "",
                "params": {
                    "hosts": ["m1", "m2"], "ports": [2379, 2380],
                    "evidence": {"m1": {"kind": "attested", "how": "ann says so", "by": "ann"},
                                 "m2": {"kind": "stopped", "how": "etcd stopped", "by": None}},
                },
            },
            {
                "id": "stop:m3", "action": "etcd-stop", "host": "m3", "description": "stop",
                "postcondition": "stopped", "reason": "why", "destructive": True, "holds": False, "runs": "",
                "params": {
                    "runtime": "docker", "name": "etcd", "image": None, "binary": "/usr/bin/etcd",
                    "data_dir": "/var/lib/etcd", "endpoint": "https://10.0.0.3:2379", "timeout_s": 30,
                    "sync_leader": True, "sync_key": "/etcd-dr/recovery/wal-sync-1",
                },
            },
            {
                "id": "recreate:m3", "action": "etcd-run", "host": "m3", "description": "recreate",
                "postcondition": "runs", "reason": "why", "destructive": True, "holds": False, "runs": "",
                "params": {
                    "runtime": "docker", "name": "etcd", "image": None, "binary": "/usr/bin/etcd",
                    "data_dir": "/var/lib/etcd", "endpoint": "https://10.0.0.3:2379", "member": "etcd-m3",
                    "initial_cluster": "etcd-m3=https://10.0.0.3:2380", "extra_flags": [],
                    "args": ["--name=etcd-m3"], "restart": "always", "image_from": "etcd-old-1",
                    "forced_name": "etcd-forced-1",
                },
            },
        ],
    },
}  # fmt: skip


def test_typed_params_come_back_from_the_journal_in_their_types(tmp_path: Path) -> None:
    from etcd_dr.recovery.evidence import FenceKind
    from etcd_dr.recovery.steps import RecordedFence

    fence = FenceCheckParams(
        hosts=("m1", "m2"),
        ports=(2379, 2380),
        evidence={"m1": RecordedFence(FenceKind.ATTESTED, "ann says so", "ann")},
    )
    steps = (
        Step("fence-check", RecoveryAction.FENCE_CHECK, None, "check", "fenced", "why", params=fence),
        Step("stop:m3", RecoveryAction.STOP, "m3", "stop", "stopped", "why", True, STOP),
        Step("force-new-cluster:m3", RecoveryAction.RUN, "m3", "force", "runs", "why", True, RUN),
    )
    plan = Plan("recover", "c1", "quorum lost", steps, params={"path": "force-new-cluster"})
    path = tmp_path / "recover-c1.json"
    R._write_journal(path, plan, INC)
    back = R.load_journal(path, "c1")
    assert back is not None and back.plan == plan  # equal in every field, params typed as before
    f = back.plan.steps[0].typed(FenceCheckParams)
    assert f.hosts == ("m1", "m2") and f.evidence["m1"].kind is FenceKind.ATTESTED
    assert back.plan.steps[2].action is RecoveryAction.RUN
    assert (
        back.plan.steps[2].typed(RunParams).forced and back.plan.steps[2].typed(RunParams).forced_name is None
    )
    # the journal's JSON is the plan JSON as before: lists, plain strings, no key for an unset name
    d = json.loads(path.read_text())["plan"]["steps"]
    assert d[0]["params"]["evidence"]["m1"] == {"kind": "attested", "how": "ann says so", "by": "ann"}
    assert d[2]["params"]["extra_flags"] == [FORCE_FLAG] and "forced_name" not in d[2]["params"]


def test_a_journal_written_before_typed_params_still_resumes(tmp_path: Path) -> None:
    from etcd_dr.recovery.evidence import FenceKind

    path = tmp_path / "recover-c1.json"
    path.write_text(json.dumps(OLD_JOURNAL))
    back = R.load_journal(path, "c1")
    assert back is not None and back.started == ("stop:m3",)
    fence, stop, run = back.plan.steps
    assert fence.typed(FenceCheckParams).evidence["m2"].kind is FenceKind.STOPPED
    assert stop.typed(StopParams).timeout_s == 30 and stop.typed(StopParams).image is None
    assert run.typed(RunParams).forced_name == "etcd-forced-1" and not run.typed(RunParams).forced
    assert back.plan.to_json()["steps"] == OLD_JOURNAL["plan"]["steps"]  # the same plan, shown the same


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s[1].update(action="etcd-kill"), "action 'etcd-kill' is not a recovery action"),
        (lambda s: s[1]["params"].pop("sync_key"), "StopParams: field 'sync_key' is missing"),
        (lambda s: s[1]["params"].update(timeout_s="30"), "field 'timeout_s': an integer"),
    ],
)
def test_a_journal_of_another_version_is_refused_naming_the_file(tmp_path: Path, change, why: str) -> None:
    d = json.loads(json.dumps(OLD_JOURNAL))
    change(d["plan"]["steps"])
    path = tmp_path / "recover-c1.json"
    path.write_text(json.dumps(d))
    with pytest.raises(R.InputError) as e:
        R.load_journal(path, "c1")
    assert str(path) in str(e.value) and why in str(e.value) and "move it aside" in str(e.value)
    assert path.exists()  # nothing moved or deleted: the operator decides


def test_a_resumed_journal_of_a_cluster_that_changed_under_it_is_closed_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, STOP)
    R._write_journal(tmp_path / "recover-c1.json", Plan("recover", "c1", "force m3", (step,)), INC, [step.id])
    calls = _patch(monkeypatch, Plan("recover", "c1", "unused", ()), under="m1 answers etcd again")
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.STALE and res.resumed and exit_for(res) == 1
    assert res.reason.startswith(
        "the cluster changed since this plan was made: m1 answers etcd again: this recovery's journal is "
        "closed, not resumed (steps it had begun: stop:m3); nothing was done now: check `etcd-dr status`, "
        "then run `etcd-dr recover` again"
    )
    assert "lease" not in calls and "execute" not in calls and "plan" not in calls
    assert not (tmp_path / "recover-c1.json").exists()
    assert len(list(tmp_path.glob("recover-c1-*.closed.json"))) == 1  # moved aside, not deleted
