"""Undoing a learner add, as a rollback after a failed step or as `etcd-dr learner remove`: etcd
stopped and renamed aside (`etcd-<label>-<UTC ts>`, restart policy off), the member removed, the
data dir moved to `<data_dir>.bak-<UTC ts>` (never deleted). Each part checks first."""

from __future__ import annotations

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.inventory import Inventory
from etcd_dr.learner.steps import Ctx, data_dir_aside, set_aside_runtime
from etcd_dr.plans import Rollback
from etcd_dr.stepctx import Say


def move_data_dir(c: Ctx) -> list[str]:
    dest = data_dir_aside(c)
    return [f"data dir moved to {dest}"] if dest else []


def _remove_member(c: Ctx, reason: str) -> list[str]:
    m = c.member()
    if m is None:
        return []
    c.cluster.member_remove(m.id)
    c.event("member-remove", "ok", reason, member_id=f"{m.id:x}")
    return [f"member {m.id:x} removed"]


def set_aside_member(
    c: Ctx, reason: str, *, label: str = "failed", action: str = "learner-add.rollback"
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
            done += part(c)
        except EtcdDrError as e:
            errors.append(str(e))
    rb = Rollback(tuple(done), tuple(errors))
    c.event(action, "ok" if rb.ok else "failed", reason, done=list(done), errors=list(errors))
    return rb


def remove_learner(inv: Inventory, host: str, *, say: Say | None = None) -> Rollback:
    """Take host's member out again (learner or promoted), the same way a rollback does. Refused for
    hosts the inventory calls voters (masters are not removed this way)."""
    h = inv.host(host)
    if h.is_voter:
        raise InputError(
            f"{h.name} is an etcd voter in the inventory: etcd-dr does not remove masters this way"
        )
    with Ctx.for_host(inv, host, say=say) as c:
        return set_aside_member(
            c, f"remove {h.name}'s member as asked", label="removed", action="learner.remove"
        )
