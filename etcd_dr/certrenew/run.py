"""`etcd-dr cert renew`: look, plan, confirm, execute; the entry point the CLI shares.

res = renew(inv, ["master1"], plan_only=True)    # what it would do, and why
res = renew(inv, ["master1"], yes=True)          # reissue, restart, wait
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

from cryptography import x509

from etcd_dr.certissue import member_sans
from etcd_dr.certrenew.plan import RenewLook, plan_renew
from etcd_dr.certrenew.steps import RenewCtx, handlers
from etcd_dr.certs import cert_sans
from etcd_dr.errors import EtcdDrError
from etcd_dr.executor import audit_log_for
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, PlanRun, StepRunner, execute
from etcd_dr.state import observe
from etcd_dr.stepctx import Say

Confirm = Callable[[Plan], bool]


RenewResult = PlanRun  # the plan, its outcome, confirmed, duration


def _current(c: RenewCtx, host: str) -> x509.Certificate | None:
    """The member certificate on the host now (its SANs are kept in the new one), None if unreadable."""
    try:
        return x509.load_pem_x509_certificate(c.executor(host).get(c.inv.etcd.cert_path(c.inv.host(host))))
    except (EtcdDrError, ValueError):
        return None


def _look(inv: Inventory, c: RenewCtx, hosts: Sequence[str]) -> RenewLook:
    sans: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = {}
    serials: dict[str, str] = {}
    for h in hosts:
        cert = _current(c, h)
        if cert is None:
            sans[h] = None
            continue
        ips, dns = cert_sans(cert)
        sans[h], serials[h] = (tuple(sorted(ips)), tuple(sorted(dns))), f"{cert.serial_number:x}"
    return RenewLook(observe(inv, check_ssh=False), sans, serials)


def renew(
    inv: Inventory,
    hosts: Sequence[str],
    *,
    yes: bool = False,
    plan_only: bool = False,
    confirm: Confirm | None = None,
    say: Say = lambda _m: None,
    run_step: StepRunner | None = None,
) -> RenewResult:
    """Look (the cluster, each host's current SANs), plan, confirm, execute. Unknown hosts are bad
    input (InputError) before anything is contacted."""
    t0 = time.monotonic()
    for h in hosts:
        inv.host(h)
    audit = audit_log_for(inv)
    c = RenewCtx(inv, audit, say)
    try:
        look = _look(inv, c, hosts)
        plan = plan_renew(inv, look, hosts, now=dt.datetime.now(dt.UTC), member_sans=member_sans)
        if plan.refused or plan_only:
            if plan.refused and audit is not None:
                audit.event(
                    host=",".join(hosts) or "-", action="cert-renew", outcome="refused", reason=plan.reason
                )
            return RenewResult(plan, None, not plan.refused, time.monotonic() - t0)
        if not yes and not (confirm is not None and confirm(plan)):
            return RenewResult(plan, None, False, time.monotonic() - t0)
        outcome = execute(plan, handlers(c), audit=audit, say=say, run_step=run_step)
        if audit is not None:
            audit.event(
                host=",".join(hosts),
                action="cert-renew",
                outcome="ok" if outcome.ok else "failed",
                reason=plan.reason,
                duration_s=time.monotonic() - t0,
            )
        return RenewResult(plan, outcome, True, time.monotonic() - t0)
    finally:
        c.close()
