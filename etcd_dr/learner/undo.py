"""Undoing a learner add, as a rollback after a failed step or as `etcd-dr learner remove`: etcd
stopped and renamed aside (`etcd-<label>-<UTC ts>`, restart policy off), the member removed, the
data dir moved to `<data_dir>.bak-<UTC ts>` (never deleted). Each part checks first."""

from __future__ import annotations

import datetime as dt

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.inventory import Inventory
from etcd_dr.learner.plan import LearnerOptions
from etcd_dr.learner.session import Say, Session
from etcd_dr.plans import Rollback

_TS = "%Y%m%dT%H%M%SZ"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime(_TS)


def set_aside_runtime(s: Session, label: str = "old") -> list[str]:
    rt = s.runtime()
    if not rt.exists():
        return []
    if rt.is_running():
        rt.stop()
    aside = rt.rename(f"etcd-{label}-{_stamp()}")
    aside.set_restart(False)  # NOTES: a renamed container keeps --restart=always and returns at boot
    name = getattr(aside, "container", None) or getattr(aside, "name", "")
    return [f"etcd stopped and renamed to {name}"]


def data_dir_aside(s: Session) -> str | None:
    """Move the data dir to <data_dir>.bak-<UTC ts> (never deleted); where it went, or None when
    there was none."""
    d = s.inv.etcd.data_dir
    if not s.ex.run(["test", "-e", d], check=False).ok:
        return None
    dest = f"{d}.bak-{_stamp()}"
    s.ex.run(["mv", d, dest], reason="move the member's data dir aside (never deleted)")
    return dest


def move_data_dir(s: Session) -> list[str]:
    dest = data_dir_aside(s)
    return [f"data dir moved to {dest}"] if dest else []


def _remove_member(s: Session, reason: str) -> list[str]:
    m = s.member()
    if m is None:
        return []
    s.client.member_remove(m.id)
    s.event("member-remove", "ok", reason, member_id=f"{m.id:x}")
    return [f"member {m.id:x} removed"]


def set_aside_member(
    s: Session, reason: str, *, label: str = "failed", action: str = "learner-add.rollback"
) -> Rollback:
    """Undo a (partial) learner add so that a retry starts clean: etcd stopped and renamed to
    etcd-<label>-<ts>, the member removed, the data dir moved aside. Each part runs even when
    another failed; what could not be undone is reported."""
    done: list[str] = []
    errors: list[str] = []
    # stop first: a removed member that still runs shuts down, and --restart=always brings it back
    parts = (lambda x: set_aside_runtime(x, label), lambda x: _remove_member(x, reason), move_data_dir)
    for part in parts:
        try:
            done += part(s)
        except EtcdDrError as e:
            errors.append(str(e))
    rb = Rollback(tuple(done), tuple(errors))
    s.event(action, "ok" if rb.ok else "failed", reason, done=list(done), errors=list(errors))
    return rb


def remove_learner(inv: Inventory, host: str, *, say: Say | None = None) -> Rollback:
    """Take host's member out again (learner or promoted), the same way a rollback does. Refused for
    hosts the inventory calls voters (masters are not removed this way)."""
    h = inv.host(host)
    if h.is_voter:
        raise InputError(
            f"{h.name} is an etcd voter in the inventory: etcd-dr does not remove masters this way"
        )
    with Session(inv, host, LearnerOptions(), say=say) as s:
        return set_aside_member(
            s, f"remove {h.name}'s member as asked", label="removed", action="learner.remove"
        )
