"""Before a rejoin sets a lost master's old member aside: stop it, move its data dir aside (never
deleted) and read from there what it holds beyond the recovered cluster, so that nothing the old
majority acknowledged is dropped without a word."""

from __future__ import annotations

import datetime as dt

from etcd_dr.diverged.read import TS, DivergedReport, report_for, save_report
from etcd_dr.inventory import Inventory
from etcd_dr.learner.plan import LearnerOptions
from etcd_dr.learner.session import Say, Session
from etcd_dr.learner.undo import set_aside_runtime
from etcd_dr.state import ClusterState


def keep_old_member(
    inv: Inventory, host: str, opts: LearnerOptions, state: ClusterState, say: Say | None = None
) -> DivergedReport | None:
    """Stop host's old etcd (renamed aside, restart off: the learner's own set-aside, done early so
    that its db is read stopped), move <data_dir> to <data_dir>.bak-<UTC ts>, and report what it
    holds that the cluster lacks. None when there is no old data dir (nothing to read)."""
    with Session(inv, host, opts, say=say) as s:
        for done in set_aside_runtime(s):
            s.say(f"{host}: {done}")
        d = inv.etcd.data_dir.rstrip("/")
        if not s.ex.run(["test", "-e", f"{d}/member"], check=False).ok:
            return None
        kept = f"{d}.bak-{dt.datetime.now(dt.UTC).strftime(TS)}"
        s.ex.run(["mv", d, kept], reason="keep the old member's data dir (never deleted) to read it")
        s.say(f"{host}: data dir moved to {kept}; reading what it holds beyond the recovered cluster")
        report = save_report(inv, report_for(inv, host, kept, state, ex=s.ex), s.audit)
        s.say(report.sentence)
        return report
