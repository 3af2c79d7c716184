"""etcd_dr.recover and etcd_dr.recovery_steps without hosts: the argument rewrite, the journal, and
the decisions recover() takes before it executes anything."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from etcd_dr import recover as R
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, Step
from etcd_dr.recovery import FORCE_FLAG
from etcd_dr.recovery_steps import recovery_args

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


def _plan() -> Plan:
    step = Step("etcd-run:m3", "etcd-run", "m3", "start", "runs", "why", True, {"args": ["--a"], "n": 1})
    return Plan("recover", "c1", "quorum lost: ...", (step,))


def test_plan_round_trips_through_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "recover-c1.json"
    R._write_journal(path, _plan())
    back = R.load_journal(path, "c1")
    assert back is not None and back.to_json() == _plan().to_json()
    with pytest.raises(R.InputError, match="journal of cluster 'c1', not 'c2'"):
        R.load_journal(path, "c2")
    path.write_text("{not json")
    with pytest.raises(R.InputError, match="unreadable"):
        R.load_journal(path, "c1")
    assert R.load_journal(tmp_path / "none.json", "c1") is None


def _inv(tmp_path: Path) -> Inventory:
    class FakeInv:
        cluster = "c1"
        audit_log = tmp_path / "audit.jsonl"
        voters = ()

        def state_path(self, name: str) -> Path:
            return tmp_path / name

    return FakeInv()  # type: ignore[return-value]


def _patch(monkeypatch: pytest.MonkeyPatch, plan: Plan) -> list[str]:
    calls: list[str] = []

    class State:
        verdict = "quorum lost"
        quorum = False
        members = ()

    monkeypatch.setattr(R, "observe", lambda inv: State())
    monkeypatch.setattr(R, "gather", lambda inv, hosts: {})
    monkeypatch.setattr(R, "plan_recovery", lambda state, inv, **kw: plan)
    monkeypatch.setattr(R, "audit_log_for", lambda inv: None)
    monkeypatch.setattr(R, "_catalog", lambda inv: [])
    monkeypatch.setattr(R, "_quick_ssh", lambda inv: inv)

    def fake_execute(p, handlers, **kw):
        calls.append("execute")
        raise AssertionError("must not execute")

    monkeypatch.setattr(R, "execute", fake_execute)
    return calls


def test_a_second_recovery_of_the_cluster_is_refused_while_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("copy-db:n1", "copy-file", "n1", "copy", "copied", "why")
    calls = _patch(monkeypatch, Plan("recover", "c1", "learner", (step,)))
    with open(tmp_path / "recover-c1.lock", "a") as held:  # what a running recovery holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.BUSY and res.exit_code == 1
    assert res.reason.startswith("another recovery of cluster c1 is running")
    assert not calls and not (tmp_path / "recover-c1.json").exists()
    # released (the holder ended, even by SIGKILL: the kernel drops the lock): the next one acts
    calls = _patch(monkeypatch, Plan("recover", "c1", "learner", (step,)))
    with pytest.raises(AssertionError, match="must not execute"):
        R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert calls == ["execute"]


def test_refused_and_unconfirmed_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _patch(
        monkeypatch, Plan("recover", "c1", "quorum held: 3 of 3; nothing to recover", refused=True)
    )
    res = R.recover(_inv(tmp_path), yes=True, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.REFUSED and res.exit_code == 1
    assert res.reason == "quorum held: 3 of 3; nothing to recover"

    step = Step("force-new-cluster:m3", "etcd-run", "m3", "force", "runs", "why")
    calls = _patch(monkeypatch, Plan("recover", "c1", "quorum lost", (step,)))
    res = R.recover(_inv(tmp_path), yes=False, plan_only=False, say=lambda m: None)
    assert res.status is R.RecoverStatus.NOT_CONFIRMED and res.exit_code == 2
    res = R.recover(_inv(tmp_path), yes=False, plan_only=False, say=lambda m: None, confirm=lambda p: False)
    assert res.status is R.RecoverStatus.NOT_CONFIRMED
    res = R.recover(_inv(tmp_path), yes=False, plan_only=True, say=lambda m: None)
    assert res.status is R.RecoverStatus.PLANNED and res.exit_code == 0
    assert json.loads(json.dumps(res.to_json()))["path"] == "force-new-cluster"
    assert not calls and not (tmp_path / "recover-c1.json").exists()


def test_an_unfinished_recovery_is_resumed_not_planned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Step("force-new-cluster:m3", "etcd-run", "m3", "force", "runs", "why")
    journalled = Plan("recover", "c1", "quorum lost (journalled)", (step,))
    R._write_journal(tmp_path / "recover-c1.json", journalled)
    _patch(monkeypatch, Plan("recover", "c1", "quorum held", refused=True))
    monkeypatch.setattr(R, "observe", lambda inv: pytest.fail("a resumed plan is not observed again"))
    res = R.recover(_inv(tmp_path), yes=False, plan_only=True, say=lambda m: None)
    assert res.resumed and res.plan.reason == "quorum lost (journalled)"


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


def _ctx(plan: Plan, host: _FakeHost):
    from etcd_dr.recovery_steps import Ctx

    c = Ctx.__new__(Ctx)
    c.plan = plan
    c.executor = lambda h: host  # type: ignore[method-assign]
    c.runtime = lambda h, name: host  # type: ignore[method-assign]
    return c


@pytest.mark.parametrize("action", ["copy-dir", "copy-file"])
def test_a_data_dir_is_not_copied_while_the_member_runs_again(action: str) -> None:
    from etcd_dr.recovery_steps import RecoveryStepError, handlers

    stop = Step("stop:m3", "etcd-stop", "m3", "stop", "stopped", "why", True, {"name": "etcd"})
    copy = Step(f"{action}:m3", action, "m3", "copy", "copied", "why", False, {"src": "/d", "dst": "/d.bak"})
    plan = Plan("recover", "c1", "quorum lost", (stop, copy))
    host = _FakeHost(running=True)  # restarted by someone since the stop
    with pytest.raises(RecoveryStepError, match="etcd runs again: its data dir is not quiet"):
        handlers(_ctx(plan, host))[action].run(copy)
    assert not any(c[:2] == ["sh", "-c"] for c in host.commands)  # nothing copied
    host = _FakeHost(running=False)
    handlers(_ctx(plan, host))[action].run(copy)
    assert any(c[:2] == ["sh", "-c"] for c in host.commands)
