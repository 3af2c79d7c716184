"""etcd_dr.journal: one journal for every plan kind (file, lock, steps begun), and the picture a
plan rests on (`Basis`) checked against a fresh one before a resume (no I/O beyond tmp files)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path

import pytest

from etcd_dr import journal as J
from etcd_dr.errors import InputError
from etcd_dr.plans import Plan, Step, StepResult, StepState
from tests.unit.test_recovery import INV, cluster, mid, status

HEALTHY = {h: (500, 500, "master1") for h in ("master1", "master2", "master3")}


def _plan() -> Plan:
    step = Step("rke-up", "rke-up", "n2", "up", "ok", "why", True)
    return Plan("kubernetes", "c1", "surviving-plane", (step,))


def test_write_load_mark_close_and_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "kubernetes-c1.json"
    J.write(path, _plan(), counted="recorded", basis={"quorum": True})
    got = J.load(path, "c1", J.KUBERNETES, lambda p: p)
    assert got is not None and got.plan.to_json() == _plan().to_json() and got.started == ()
    assert got.body["counted"] == "recorded" and got.body["basis"] == {"quorum": True}
    ran: list[str] = []
    wrap = J.journalled(path, None)
    step = _plan().steps[0]
    wrap(step, lambda: ran.append("x") or StepResult(step, StepState.DONE))
    assert J.load(path, "c1", J.KUBERNETES, lambda p: p).started == ("rke-up",)  # type: ignore[union-attr]
    # a `before` that answers stops the step: nothing recorded as begun, the body never runs
    J.write(path, _plan())
    stop = J.journalled(path, None, before=lambda s: StepResult(s, StepState.FAILED, 0.0, "lease lost"))
    assert stop(step, lambda: ran.append("y") or StepResult(step, StepState.DONE)).error == "lease lost"
    assert ran == ["x"] and J.load(path, "c1", J.KUBERNETES, lambda p: p).started == ()  # type: ignore[union-attr]
    with pytest.raises(InputError, match="journal of cluster 'c1', not 'c2'; move it aside"):
        J.load(path, "c2", J.KUBERNETES, lambda p: p)
    with J.lock(path) as held, J.lock(path) as again:
        assert held and not again  # one run per cluster and kind
    with open(path.with_suffix(".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the holder is gone
    closed = J.close(path, "closed")
    assert not path.exists() and closed.name.startswith("kubernetes-c1-")
    assert closed.name.endswith(".closed.json")
    path.write_text("{oops")
    with pytest.raises(InputError, match=r"journal unreadable .*; move it aside to decide afresh"):
        J.load(path, "c1", J.KUBERNETES, lambda p: p)
    assert path.exists()  # nothing moved: the operator decides


def test_the_basis_round_trips_and_the_same_cluster_still_fits() -> None:
    b = J.Basis.of(cluster(INV, HEALTHY))
    assert J.Basis.from_json(json.loads(json.dumps(b.to_json()))) == b
    assert b.quorum and b.leader == "master1" and b.revision == 400
    assert b.voters == {h: mid(h) for h in ("master1", "master2", "master3")}
    grown = {h: (600, 600, "master2") for h in ("master1", "master2", "master3")}
    assert J.changed_since(b, cluster(INV, grown)) is None  # more data, another leader: no change


@pytest.mark.parametrize(
    ("now", "why"),
    [
        ({"master1": (500,)}, "quorum is lost now (quorum lost: 1 of 3 voters reachable"),
        ({h: (450, 450, "master1") for h in HEALTHY}, "revision went back from 400 to 350"),
    ],
)
def test_what_the_plan_rests_on_changed(now: dict, why: str) -> None:
    b = J.Basis.of(cluster(INV, HEALTHY))
    got = J.changed_since(b, cluster(INV, now))
    assert got is not None and why in got


def test_another_cluster_id_is_a_change() -> None:
    b = J.Basis.of(cluster(INV, HEALTHY))
    other = {h: dataclasses.replace(status(INV, h, 500, leader="master1"), cluster_id=0xC1) for h in HEALTHY}
    b = dataclasses.replace(b, cluster_id=0xAA)
    why = J.changed_since(b, cluster(INV, other))
    assert why == "etcd is now cluster c1, the plan was made for cluster aa"
