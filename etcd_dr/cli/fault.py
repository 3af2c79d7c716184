"""`etcd-dr fault ...`: inject a rehearsal fault on a master, heal it, list what is active.

Exit codes: 0 done (or nothing to do), 1 a step failed, 2 refused or bad input (nothing changed)."""

from __future__ import annotations

import argparse
import sys

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args, table
from etcd_dr.cli.result import Exit, emit, plan_exit
from etcd_dr.errors import InputError
from etcd_dr.faults.plan import KILL_MODES, FaultLedger, FaultMode
from etcd_dr.faults.steps import FaultRun, heal, inject, inject_host_fault, plan_host_fault, plan_injection
from etcd_dr.lab.faults import controls_for

MODES = ", ".join(m.value for m in KILL_MODES)


def _say(args: argparse.Namespace):
    return (lambda _m: None) if args.json else print


def _report(args: argparse.Namespace, run: FaultRun, verb: str) -> int:
    emit(args.json, run.to_json, lambda: _text(run, verb))
    if run.plan.refusal is not None:
        print(f"etcd-dr: {run.plan.reason}", file=sys.stderr)
    return plan_exit(run.plan, run.ok)


def _text(run: FaultRun, verb: str) -> str | None:
    if run.plan.refused:
        return None  # said on stderr
    out = f"{verb} {'ok' if run.ok else 'FAILED'} in {run.duration_s:.2f} s: {run.plan.reason}"
    if run.outcome is not None and run.outcome.failed is not None:
        out += f"\nfailed step: {run.outcome.failed.step.description}: {run.outcome.failed.error}"
    return out


def _confirm(args: argparse.Namespace, host: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise InputError("fault injection is destructive: pass --yes to confirm (no terminal to ask on)")
    answer = input(f"type {host} to inject this fault: ").strip()
    if answer != host:
        raise InputError(f"not confirmed (typed {answer!r}, expected {host!r}): nothing was changed")


def cmd_kill_master(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    mode = FaultMode(args.mode)
    kw = {"power_off_real_host": args.power_off_real_host, "say": _say(args), "lab": controls_for(inv)}
    if args.dry_run or not args.yes:
        plan, rec, _ctx, _ledger = plan_injection(inv, args.host, mode, **kw)
        dry = FaultRun(plan, None, (rec,) if rec else (), 0.0)
        if plan.refused:
            return _report(args, dry, "fault")
        if args.dry_run:
            emit(args.json, dry.to_json, plan.render)
            return Exit.OK
        if not args.json:
            print(plan.render())
        _confirm(args, args.host)
    return _report(args, inject(inv, args.host, mode, **kw), "fault")


def _cmd_host_fault(mode: FaultMode):
    def cmd(args: argparse.Namespace) -> int:
        inv = inventory_from_args(args)
        kw = {"hours": getattr(args, "hours", 8.0), "say": _say(args), "lab": controls_for(inv)}
        if args.dry_run or not args.yes:
            plan, rec, _ctx, _ledger = plan_host_fault(inv, args.host, mode, **kw)
            dry = FaultRun(plan, None, (rec,) if rec else (), 0.0)
            if plan.refused:
                return _report(args, dry, "fault")
            if args.dry_run:
                emit(args.json, dry.to_json, plan.render)
                return Exit.OK
            if not args.json:
                print(plan.render())
            _confirm(args, args.host)
        return _report(args, inject_host_fault(inv, args.host, mode, **kw), "fault")

    return cmd


def cmd_heal(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    run = heal(inv, args.host, say=_say(args), lab=controls_for(inv))
    return _report(args, run, "heal")


def cmd_list(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    faults = FaultLedger.for_inventory(inv).active()
    rows = [(f.host, f.mode, f.via, f.injected_at, "yes" if f.reversible else "no", f.id) for f in faults]
    emit(
        args.json,
        lambda: [f.to_json() for f in faults],
        lambda: (
            table(("HOST", "MODE", "VIA", "INJECTED", "REVERSIBLE", "ID"), rows)
            if faults
            else "no active fault"
        ),
    )
    return Exit.OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fault", help="inject rehearsal faults on masters and heal them")
    fs = p.add_subparsers(dest="fault_command", metavar="ACTION", required=True)

    k = fs.add_parser(
        "kill-master",
        help="take one etcd voter down (refused unless the inventory says rehearsal: true)",
        description="power: the host vanishes (lab: cable out + every process killed; real host: "
        "systemctl poweroff, only with --power-off-real-host, not healable remotely); etcd: the member "
        "is killed, the host stays; network: the host is cut off (lab: cable out; real host: iptables "
        "drops the client and peer ports, tagged so heal removes exactly those rules).",
    )
    add_inventory_arg(k)
    k.add_argument("--host", required=True, help="the voter to take down, e.g. master1")
    k.add_argument("--mode", choices=[m.value for m in KILL_MODES], default=FaultMode.POWER.value)
    k.add_argument("--power-off-real-host", action="store_true", help="allow --mode power on a real host")
    k.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    k.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    k.add_argument("--json", action="store_true", help="print the result as one JSON object")
    k.set_defaults(func=cmd_kill_master)

    o = fs.add_parser(
        "orphan-sandbox",
        help="a container labelled with a missing sandbox id; kubelet restarted into its loop",
        description="Creates a real container on HOST (from kubelet's own image, never started) "
        "labelled io.kubernetes.sandbox.id=<64 random hex> and etcd-dr.fault=<fault id>, then restarts "
        "kubelet, which fails at start with 'no PodsandBox found with Id'. Repair: `etcd-dr hosts "
        "kubelet-cleanup --host H`; `fault heal` removes exactly that container and restarts kubelet.",
    )
    c = fs.add_parser(
        "cert-not-yet-valid",
        help="reissue a member's certificate with NotBefore hours ahead and restart the member",
        description="Signs a new key for HOST's member with kube-ca (same names and SANs) whose "
        "validity starts --hours ahead of HOST's clock, as a machine whose clock is ahead would; the old "
        "pair is kept as <file>.before-<fault id>; etcd is restarted so that it serves it and its peers "
        "refuse it with Go's x509 error. `fault heal` puts the kept pair back (the one dated ahead kept "
        "as .fault-<id>).",
    )
    c.add_argument("--hours", type=float, default=8.0, help="how far ahead NotBefore is (default 8)")
    for sp, mode in ((o, FaultMode.ORPHAN_SANDBOX), (c, FaultMode.CERT_NOT_YET_VALID)):
        add_inventory_arg(sp)
        sp.add_argument("--host", required=True)
        sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        sp.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        sp.add_argument("--json", action="store_true", help="print the result as one JSON object")
        sp.set_defaults(func=_cmd_host_fault(mode))

    h = fs.add_parser("heal", help="undo the active faults (all, or one host's); idempotent")
    add_inventory_arg(h)
    h.add_argument("--host", default=None, help="heal only this host's faults")
    h.add_argument("--json", action="store_true", help="print the result as one JSON object")
    h.set_defaults(func=cmd_heal)

    ls = fs.add_parser("list", help="the active faults (the ledger beside the audit log)")
    add_inventory_arg(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
