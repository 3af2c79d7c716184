"""Carrying fault plans out: the step handlers (lab controls, SSH), and inject()/heal(), which plan,
record in the ledger and the audit log, and run the plan through etcd_dr.plans.execute. On a lab's
inventory the caller passes the lab's power and cable as `lab` (etcd_dr/lab/faults.py: controls_for):
the core does not import the lab."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography import x509

from etcd_dr.audit import register_secret
from etcd_dr.certissue import load_ca, member_sans, read_host_clock
from etcd_dr.certrenew.steps import restart_member, serves_file_since
from etcd_dr.certs import issue_cert
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.faults.plan import (
    FAULT_LABEL,
    CertAheadParams,
    CertRestoreParams,
    DropParams,
    FaultAction,
    FaultLedger,
    FaultMode,
    FaultRecord,
    HealParams,
    KillParams,
    KubeletParams,
    OrphanHealParams,
    OrphanParams,
    PowerOffParams,
    StartParams,
    TargetParams,
    UndropParams,
    Via,
    WaitMemberParams,
    plan_cert_not_yet_valid,
    plan_fault,
    plan_heal,
    plan_orphan_sandbox,
)
from etcd_dr.hostrepair.plan import SANDBOX_LABEL, TYPE_LABEL, RestartParams, sandbox_ids_in
from etcd_dr.hostrepair.steps import RestartKubelet, kubelet_log, kubelet_state, labelled_ids
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Outcome, Params, Plan, Step, StepHandler, execute
from etcd_dr.recovery.fencing import port_answers
from etcd_dr.runtime import DockerRuntime, ProcessRuntime, runtime_for
from etcd_dr.stepctx import Handler, Say, StepContext, wait

PROBE_TIMEOUT = 0.5  # "does not answer on 2379": a lab host that is up answers in milliseconds
POWER_OFF_WAIT_S = 120


class FaultStepError(EtcdDrError):
    """A fault or heal step could not be carried out."""


class LabControls(Protocol):
    """A lab's power, cable and console (etcd_dr.lab.faults.LabFaultControls)."""

    def executor(self, host: str) -> Executor: ...
    def runtime(self, host: str) -> DockerRuntime | ProcessRuntime: ...
    def is_on(self, host: str) -> bool: ...
    def link_is_up(self, host: str) -> bool | None: ...
    def ssh_answers(self, address: str, timeout: float) -> bool: ...
    def power_off(self, host: str, say: Say) -> None: ...
    def power_on(self, host: str, say: Say) -> None: ...
    def plug_only(self, host: str) -> None: ...
    def set_plugged(self, host: str, plugged: bool, say: Say) -> None: ...


@dataclass
class Ctx(StepContext):
    """What the handlers share (etcd_dr.stepctx: executors, etcd clients, wait), and the lab's
    controls when the inventory is a running lab's."""

    lab: LabControls | None = None  # when the inventory is a running lab's

    def executor(self, host: str) -> Executor:
        if self.lab is not None:
            return self.lab.executor(host)  # reads the host's PID afresh
        return super().executor(host)

    def runtime(self, host: str) -> DockerRuntime | ProcessRuntime:
        if self.lab is not None:
            return self.lab.runtime(host)
        return runtime_for(self.inv, self.executor(host))

    @property
    def lab_controls(self) -> LabControls:
        if self.lab is None:
            raise FaultStepError("a lab control step in a plan for real hosts: plan again")
        return self.lab

    def answers(self, step: Step) -> bool:
        p = step.typed(TargetParams)
        return port_answers(p.address, p.port, PROBE_TIMEOUT)


def _host(step: Step) -> str:
    if step.host is None:
        raise FaultStepError(f"step {step.id}: no host; the plan is malformed, plan again")
    return step.host


# --- lab controls --------------------------------------------------------------------------------


class LabPowerOff(Handler[Ctx]):
    def _on(self, host: str) -> bool:
        return self.c.lab_controls.is_on(host)

    def done(self, step: Step) -> bool:
        return not self._on(_host(step)) and not self.c.answers(step)

    def run(self, step: Step) -> None:
        self.c.lab_controls.power_off(_host(step), say=self.c.say)


class LabPowerOn(LabPowerOff):
    def done(self, step: Step) -> bool:
        lab, host = self.c.lab_controls, _host(step)
        return (
            self._on(host)
            and bool(lab.link_is_up(host))
            and (lab.ssh_answers(step.typed(HealParams).address, PROBE_TIMEOUT))
        )

    def run(self, step: Step) -> None:
        host = _host(step)
        if self._on(host):  # on but unplugged (a crash between boot and plug): plug only
            self.c.lab_controls.plug_only(host)
        else:
            self.c.lab_controls.power_on(host, say=self.c.say)


class LabLink:
    def __init__(self, c: Ctx, plugged: bool) -> None:
        self.c, self.plugged = c, plugged

    def done(self, step: Step) -> bool:
        up = self.c.lab_controls.link_is_up(_host(step))
        if self.plugged:
            return bool(up)
        return up is False and not self.c.answers(step)

    def run(self, step: Step) -> None:
        self.c.lab_controls.set_plugged(_host(step), self.plugged, say=self.c.say)


# --- over SSH (or the lab's console) -------------------------------------------------------------


class EtcdKill(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        step.typed(KillParams)
        return not self.c.runtime(_host(step)).is_running() and not self.c.answers(step)

    def run(self, step: Step) -> None:
        p = step.typed(KillParams)
        # a kill, not a stop: a leader whose peers are gone stalls the whole stop timeout (NOTES)
        self.c.runtime(_host(step)).kill()
        wait(lambda: not self.c.answers(step), 10, f"{step.host} silent on {p.port}", error=FaultStepError)


class EtcdStart(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        step.typed(StartParams)
        return self.c.runtime(_host(step)).is_running()

    def run(self, step: Step) -> None:
        step.typed(StartParams)
        self.c.runtime(_host(step)).restart()


_COUNT_TAGGED = 'n=$("$1" -w 5 -S | grep -cF -- "--comment $2"); echo "$n"'
_DELETE_TAGGED = (
    '"$1" -w 5 -S | grep -F -- "--comment $2" | sed "s/^-A /-D /" | '
    'while read -r rule; do "$1" -w 5 $rule || exit 1; done'
)


def _tagged_rules(ex: Executor, ipt: str, tag: str) -> int:
    r = ex.run(["sh", "-c", _COUNT_TAGGED, "count", ipt, tag], reason=f"count iptables rules {tag}")
    return int(r.stdout.strip() or 0)


class IptablesDrop(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        p = step.typed(DropParams)
        ex = self.c.executor(_host(step))
        in_place = _tagged_rules(ex, p.rules[0][0], p.tag) == len(p.rules)
        return in_place and not self.c.answers(step)

    def run(self, step: Step) -> None:
        p = step.typed(DropParams)
        ex = self.c.executor(_host(step))
        ipt = p.rules[0][0]
        # a re-run after a crash half way: start from none of ours, never from a duplicate
        ex.run(["sh", "-c", _DELETE_TAGGED, "undrop", ipt, p.tag], reason=f"remove iptables rules {p.tag}")
        for argv in p.rules:
            ex.run(argv, reason=f"fault: drop etcd ports ({p.tag})")


class IptablesUndrop(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        p = step.typed(UndropParams)
        return _tagged_rules(self.c.executor(_host(step)), p.iptables, p.tag) == 0

    def run(self, step: Step) -> None:
        p = step.typed(UndropParams)
        argv = ["sh", "-c", _DELETE_TAGGED, "undrop", p.iptables, p.tag]
        self.c.executor(_host(step)).run(argv, reason=f"heal: remove iptables rules {p.tag}")


def _ssh_answers(c: Ctx, host: str) -> bool:
    ex = None
    try:
        ex = executor_for(c.inv, host, audit=c.audit)
        ex.run(["true"], timeout=5, reason="fault: is the host up")
        return True
    except EtcdDrError:
        return False
    finally:
        if ex is not None:
            ex.close()


class PowerOffRealHost(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        return not self.c.answers(step) and not _ssh_answers(self.c, _host(step))

    def run(self, step: Step) -> None:
        ex = self.c.executor(_host(step))
        # detached and delayed a second, so the SSH command returns before the host goes
        script = "setsid sh -c 'sleep 1; systemctl poweroff || poweroff -f' </dev/null >/dev/null 2>&1 &"
        ex.run(["sh", "-c", script], timeout=15, reason="fault: power off a real host")
        host = _host(step)
        wait(lambda: not _ssh_answers(self.c, host), POWER_OFF_WAIT_S, f"{host} off", error=FaultStepError)


class AwaitPowerOn(Handler[Ctx]):
    def done(self, step: Step) -> bool:
        return _ssh_answers(self.c, _host(step))

    def run(self, step: Step) -> None:
        raise FaultStepError(
            f"{step.host} was powered off and cannot be powered on remotely: power it on at its console "
            "(IPMI, hypervisor), then run `etcd-dr fault heal` again"
        )


class WaitMember(Handler[Ctx]):
    def _healthy(self, p: WaitMemberParams) -> bool:
        # a linearizable read through this member: a stale leader id in its Status would not do
        try:
            self.c.client(p.endpoint).member_list(linearizable=True, endpoint=p.endpoint, timeout=2.0)
        except EtcdDrError:
            return False
        return True

    def done(self, step: Step) -> bool:
        return self._healthy(step.typed(WaitMemberParams))

    def run(self, step: Step) -> None:
        p = step.typed(WaitMemberParams)
        wait(
            lambda: self._healthy(p),
            float(p.timeout_s),
            f"{step.host} answers and follows a leader",
            error=FaultStepError,
        )


# --- host faults: the orphaned sandbox, the certificate dated ahead ---------------------------------


class CreateOrphan:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p = step.typed(OrphanParams)
        return bool(labelled_ids(self.c.executor(_host(step)), f"{FAULT_LABEL}={p.fault}"))

    def run(self, step: Step) -> str:
        p = step.typed(OrphanParams)
        ex = self.c.executor(_host(step))
        # kubelet's own image: every node has it (RKE's hyperkube; the lab's stand-in image)
        image = ex.run(["docker", "inspect", "--type", "container", "-f", "{{.Config.Image}}", p.kubelet])
        labels = {SANDBOX_LABEL: p.sandbox_id, TYPE_LABEL: "container",
                  "io.kubernetes.container.name": "etcd-dr-orphan", FAULT_LABEL: p.fault}  # fmt: skip
        argv = ["docker", "create", "--name", p.name]
        for k, v in labels.items():
            argv += ["--label", f"{k}={v}"]
        argv += ["--entrypoint", "/bin/true", image.stdout.strip()]
        cid = ex.run(
            argv, reason=f"fault: container {p.name} of a sandbox that does not exist"
        ).stdout.strip()
        return f"created {p.name} ({cid[:12]}) from {image.stdout.strip()}"


def _looping_on(ex: Executor, kubelet: str, sandbox_id: str) -> bool:
    st = kubelet_state(ex, kubelet)
    if st is None or (st.running and not st.restarting and st.exit_code == 0 and st.uptime_s > 5):
        return False
    return sandbox_id in sandbox_ids_in(kubelet_log(ex, 50, name=kubelet))


class KubeletIntoLoop:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p = step.typed(KubeletParams)
        return _looping_on(self.c.executor(_host(step)), p.kubelet, p.sandbox_id)

    def run(self, step: Step) -> None:
        p = step.typed(KubeletParams)
        ex = self.c.executor(_host(step))
        ex.run(["docker", "restart", "-t", "10", p.kubelet], timeout=60, reason="fault: restart kubelet")
        what = f"kubelet on {step.host} in its loop"
        wait(lambda: _looping_on(ex, p.kubelet, p.sandbox_id), p.wait_s, what, error=FaultStepError)


class RemoveOrphan:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def _ids(self, step: Step) -> list[str]:
        return labelled_ids(
            self.c.executor(_host(step)), f"{FAULT_LABEL}={step.typed(OrphanHealParams).fault}"
        )

    def done(self, step: Step) -> bool:
        return not self._ids(step)

    def run(self, step: Step) -> None:
        ex = self.c.executor(_host(step))
        for cid in self._ids(step):  # this fault's own container, never another
            ex.run(["docker", "rm", "-f", cid], reason="heal: remove the fault's orphan container")


class KubeletSettle:
    """kubelet restarted (unless it runs steadily already) and watched for a few seconds."""

    def __init__(self, c: Ctx) -> None:
        self.restart = RestartKubelet(c)

    def _as_restart(self, step: Step) -> Step:
        p = step.typed(OrphanHealParams)
        return replace(step, params=RestartParams(p.kubelet, 3.0, 50))

    def done(self, step: Step) -> bool:
        return self.restart.done(self._as_restart(step))

    def run(self, step: Step) -> str:
        return self.restart.run(self._as_restart(step))


def _host_now(ex: Executor) -> dt.datetime:
    return read_host_clock(ex).now


def _cert_on(ex: Executor, path: str) -> x509.Certificate | None:
    if not ex.run(["test", "-f", path], check=False).ok:
        return None
    return x509.load_pem_x509_certificate(ex.get(path))


def _restart_member(c: Ctx, host: str) -> None:
    restart_member(c.runtime(host))


def _member_started_after(c: Ctx, host: str, path: str) -> bool:
    return serves_file_since(c.executor(host), c.runtime(host), path)


class CertAhead:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p = step.typed(CertAheadParams)
        ex = self.c.executor(_host(step))
        cert = _cert_on(ex, p.cert)
        return cert is not None and cert.not_valid_before_utc > _host_now(ex)

    def run(self, step: Step) -> str:
        p, host = step.typed(CertAheadParams), _host(step)
        ex, fs = self.c.executor(host), self.c.fs(host)
        ca = load_ca(self.c.inv)  # kube-ca over SSH from the inventory's ca: host; its key is redacted
        nb = _host_now(ex) + dt.timedelta(hours=p.hours)
        name = f"kube-etcd-{self.c.inv.host(host).address_dashed}"
        pair = issue_cert(ca, name, ips=p.ips, dns=p.dns, not_before=nb)
        register_secret(pair.key_pem)
        for path in (p.key, p.cert):  # the old pair kept beside it, never deleted
            kept = f"{path}.{p.kept_suffix}"
            if not fs.exists(kept) and fs.exists(path):
                fs.rename(path, kept, reason="fault: keep the member's certificate before replacing it")
        ex.put(
            pair.key_pem,
            p.key,
            mode=0o600,
            reason=f"fault: member key for a certificate dated ahead ({host})",
        )
        ex.put(
            pair.cert_pem, p.cert, mode=0o644, reason=f"fault: member certificate with NotBefore {nb:%FT%TZ}"
        )
        return f"{p.cert} now valid from {nb:%Y-%m-%dT%H:%M:%SZ} ({p.hours:g} h ahead of {host}'s clock)"


class MemberRestart:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p = step.typed(CertAheadParams)
        return _member_started_after(self.c, _host(step), p.cert)

    def run(self, step: Step) -> None:
        _restart_member(self.c, _host(step))


class CertRestore:
    def __init__(self, c: Ctx) -> None:
        self.c = c

    def _valid(self, ex: Executor, path: str) -> bool:
        cert = _cert_on(ex, path)
        if cert is None:
            return False
        now = _host_now(ex)
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc

    def done(self, step: Step) -> bool:
        p, host = step.typed(CertRestoreParams), _host(step)
        ex = self.c.executor(host)
        return self._valid(ex, p.cert) and _member_started_after(self.c, host, p.cert)

    def run(self, step: Step) -> str:
        p, host = step.typed(CertRestoreParams), _host(step)
        ex, fs = self.c.executor(host), self.c.fs(host)
        said = f"{p.cert} valid on {host}'s clock already (renewed since the fault): kept"
        if not self._valid(ex, p.cert):
            for path in (p.key, p.cert):
                kept = f"{path}.{p.kept_suffix}"
                if not fs.exists(kept):
                    raise FaultStepError(
                        f"{host}: {kept} is gone: the certificate before the fault cannot be put back"
                    )
                if fs.exists(path):  # the fault's own pair, moved aside (never deleted)
                    fs.rename(
                        path, f"{path}.fault-{p.fault}", reason="heal: set the certificate dated ahead aside"
                    )
                fs.rename(kept, path, reason="heal: put the member's certificate back")
            said = f"{p.cert} put back (the one dated ahead kept as *.fault-{p.fault})"
        _restart_member(self.c, host)
        return said


# the vocabulary: each action of etcd_dr.faults.plan' plans, its params type (etcd_dr.faults.plan) and handler
VOCABULARY: dict[FaultAction, tuple[type[Params], Callable[[Ctx], StepHandler]]] = {
    FaultAction.LAB_POWER_OFF: (TargetParams, LabPowerOff),
    FaultAction.LAB_POWER_ON: (HealParams, LabPowerOn),
    FaultAction.LAB_UNPLUG: (TargetParams, lambda c: LabLink(c, plugged=False)),
    FaultAction.LAB_PLUG: (HealParams, lambda c: LabLink(c, plugged=True)),
    FaultAction.ETCD_KILL: (KillParams, EtcdKill),
    FaultAction.ETCD_START: (StartParams, EtcdStart),
    FaultAction.IPTABLES_DROP: (DropParams, IptablesDrop),
    FaultAction.IPTABLES_UNDROP: (UndropParams, IptablesUndrop),
    FaultAction.POWEROFF: (PowerOffParams, PowerOffRealHost),
    FaultAction.AWAIT_POWER_ON: (HealParams, AwaitPowerOn),
    FaultAction.WAIT_MEMBER: (WaitMemberParams, WaitMember),
    FaultAction.CREATE_ORPHAN: (OrphanParams, CreateOrphan),
    FaultAction.KUBELET_INTO_LOOP: (KubeletParams, KubeletIntoLoop),
    FaultAction.REMOVE_ORPHAN: (OrphanHealParams, RemoveOrphan),
    FaultAction.KUBELET_SETTLE: (OrphanHealParams, KubeletSettle),
    FaultAction.CERT_AHEAD: (CertAheadParams, CertAhead),
    FaultAction.MEMBER_RESTART: (CertAheadParams, MemberRestart),
    FaultAction.CERT_RESTORE: (CertRestoreParams, CertRestore),
}


def handlers(c: Ctx) -> dict[str, StepHandler]:
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}


# --- inject / heal -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRun:
    """What inject() or heal() did: the plan, its outcome (None if refused or a dry run), the
    records concerned, and the wall time."""

    plan: Plan
    outcome: Outcome | None
    records: tuple[FaultRecord, ...]
    duration_s: float

    @property
    def ok(self) -> bool:
        return not self.plan.refused and (self.outcome is None or self.outcome.ok)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "refused": self.plan.refused,
            "reason": self.plan.reason,
            "faults": [r.to_json() for r in self.records],
            "plan": self.plan.to_json(),
            "steps": self.outcome.to_json()["steps"] if self.outcome else [],
            "duration_s": round(self.duration_s, 3),
        }


def _ctx(inv: Inventory, say: Say, lab: LabControls | None) -> tuple[Ctx, FaultLedger]:
    ledger = FaultLedger.for_inventory(inv)
    return Ctx(inv, audit_log_for(inv), say, lab=lab), ledger


def plan_injection(
    inv: Inventory,
    host: str,
    mode: FaultMode,
    *,
    power_off_real_host: bool = False,
    say: Say = print,
    lab: LabControls | None = None,
) -> tuple[Plan, FaultRecord | None, Ctx, FaultLedger]:
    """lab: the lab's controls when `inv` is a running lab's (etcd_dr.lab.faults.controls_for)."""
    c, ledger = _ctx(inv, say, lab)
    plan, rec = plan_fault(
        inv,
        host,
        mode,
        via=Via.LAB if c.lab is not None else Via.SSH,
        now=dt.datetime.now(dt.UTC),
        active=ledger.active(),
        power_off_real_host=power_off_real_host,
    )
    return plan, rec, c, ledger


def inject(
    inv: Inventory,
    host: str,
    mode: FaultMode,
    *,
    power_off_real_host: bool = False,
    dry_run: bool = False,
    say: Say = print,
    lab: LabControls | None = None,
) -> FaultRun:
    t0 = time.monotonic()
    plan, rec, c, ledger = plan_injection(
        inv, host, mode, power_off_real_host=power_off_real_host, say=say, lab=lab
    )
    return _carry_out(plan, rec, c, ledger, host, mode, t0, dry_run=dry_run)


def plan_host_fault(
    inv: Inventory,
    host: str,
    mode: FaultMode,
    *,
    hours: float = 8.0,
    say: Say = print,
    lab: LabControls | None = None,
) -> tuple[Plan, FaultRecord | None, Ctx, FaultLedger]:
    """The plan of `fault orphan-sandbox` or `fault cert-not-yet-valid` on host."""
    c, ledger = _ctx(inv, say, lab)
    via, now, active = Via.LAB if c.lab is not None else Via.SSH, dt.datetime.now(dt.UTC), ledger.active()
    if mode is FaultMode.ORPHAN_SANDBOX:
        # an id no sandbox has: 256 random bits, as Docker's own container ids
        sid = secrets.token_hex(32)
        plan, rec = plan_orphan_sandbox(inv, host, via=via, now=now, sandbox_id=sid, active=active)
    elif mode is FaultMode.CERT_NOT_YET_VALID:
        ips, dns = member_sans(inv.host(host))  # the same names and SANs as the member's own
        plan, rec = plan_cert_not_yet_valid(
            inv, host, via=via, now=now, ips=ips, dns=dns, hours=hours, active=active
        )
    else:
        raise InputError(f"{mode} is a kill-master mode: use `etcd-dr fault kill-master --mode {mode}`")
    return plan, rec, c, ledger


def inject_host_fault(
    inv: Inventory,
    host: str,
    mode: FaultMode,
    *,
    hours: float = 8.0,
    dry_run: bool = False,
    say: Say = print,
    lab: LabControls | None = None,
) -> FaultRun:
    """`fault orphan-sandbox` / `fault cert-not-yet-valid`: planned, recorded in the ledger first,
    carried out, audited; `heal` undoes them like the others."""
    t0 = time.monotonic()
    plan, rec, c, ledger = plan_host_fault(inv, host, mode, hours=hours, say=say, lab=lab)
    return _carry_out(plan, rec, c, ledger, host, mode, t0, dry_run=dry_run)


def _carry_out(
    plan: Plan,
    rec: FaultRecord | None,
    c: Ctx,
    ledger: FaultLedger,
    host: str,
    mode: FaultMode,
    t0: float,
    *,
    dry_run: bool,
) -> FaultRun:
    recs = (rec,) if rec else ()
    if plan.refused or dry_run or rec is None:
        if plan.refused and c.audit is not None:
            c.audit.event(
                host=host, action="fault-inject", outcome="refused", reason=plan.reason, mode=str(mode)
            )
        return FaultRun(plan, None, recs, time.monotonic() - t0)
    ledger.add(rec)  # first: a crash half way still leaves heal something to undo
    try:
        outcome = execute(plan, handlers(c), audit=c.audit, say=c.say)
    finally:
        c.close()
    if c.audit is not None:
        c.audit.event(
            host=host,
            action="fault-inject",
            outcome="ok" if outcome.ok else "failed",
            reason=plan.reason,
            fault=rec.id,
            mode=str(rec.mode),
            via=str(rec.via),
            duration_s=time.monotonic() - t0,
        )
    return FaultRun(plan, outcome, recs, time.monotonic() - t0)


def heal(
    inv: Inventory,
    host: str | None = None,
    *,
    wait: bool = True,
    say: Say = print,
    lab: LabControls | None = None,
) -> FaultRun:
    """Undo the active faults (of one host, or all). Idempotent: with none active it does nothing.
    wait=False: only undo, do not wait for the members (after a recovery: see plan_heal)."""
    t0 = time.monotonic()
    c, ledger = _ctx(inv, say, lab)
    if host is not None:
        inv.host(host)  # an unknown host is bad input, not "nothing to heal"
    faults = tuple(f for f in ledger.active() if host is None or f.host == host)
    plan = plan_heal(inv, faults, wait=wait)
    if not faults:
        return FaultRun(plan, None, (), time.monotonic() - t0)
    try:
        outcome = execute(plan, handlers(c), audit=c.audit, say=say)
    finally:
        c.close()
    healed = [f for f in faults if _healed(outcome, f)]
    ledger.remove([f.id for f in healed])
    if c.audit is not None:
        for f in faults:
            c.audit.event(
                host=f.host,
                action="fault-heal",
                outcome="ok" if f in healed else "failed",
                reason=plan.reason,
                fault=f.id,
                mode=str(f.mode),
                via=str(f.via),
                duration_s=time.monotonic() - t0,
            )
    return FaultRun(plan, outcome, faults, time.monotonic() - t0)


def _healed(outcome: Outcome, f: FaultRecord) -> bool:
    mine = [
        r for r in outcome.results if isinstance(r.step.params, HealParams) and r.step.params.fault == f.id
    ]
    return bool(mine) and all(r.state.value in ("done", "skipped") for r in mine)


__all__ = ["FaultMode", "FaultRun", "LabControls", "heal", "inject", "inject_host_fault"]
