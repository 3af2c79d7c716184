"""`etcd-dr kubernetes plan|cluster-yml|up` and `etcd-dr restore-kubernetes` (= `kubernetes up`):
how `rke up` can succeed on the recovered etcd, decided before it runs (etcd_dr.kubernetes.plan), the
cluster.yml that does it, written beside the operator's with a diff, and the whole way back
(etcd_dr.kubernetes.run). plan/cluster-yml exit 0 decided (written), 1 refused (the RKE error it
would end in, and the fix), 2 bad input (the inventory or RKE's files: nothing contacted, nothing
written). up/restore-kubernetes: 0 restored (or --plan), 1 refused, busy or a step failed, 2 not
confirmed or bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from etcd_dr.cli.common import add_inventory_arg, inventory_from_args
from etcd_dr.cli.result import emit, exit_for

if TYPE_CHECKING:  # the kubernetes modules load only when a command runs
    from etcd_dr.kubernetes.decide import Decided
    from etcd_dr.kubernetes.run import KubernetesResult
    from etcd_dr.plans import Plan

PLAN_HELP = """Observe the cluster, read RKE's cluster.yml and state file (the inventory's rke:), and
decide how `rke up` can succeed: the surviving etcd plane (cluster.yml keeps etcd on the recovered
members, the lost ones leave nodes until `etcd-dr rejoin`), external etcd (no node keeps etcd;
kube-apiserver reads the recovered members with the client certificate etcd-dr uses, path /registry),
or refused with the exact error `rke up` would end in and the fix. Changes nothing."""

YML_HELP = """Decide as `kubernetes plan` does and write the cluster.yml: beside the operator's
(cluster.yml -> cluster.recovered.yml, never over it), every other setting and comment kept, with the
state file and kube config `rke up --config` reads beside it. Prints a unified diff (the client key
shown as a placeholder). A file it would replace is moved aside (.bak-<UTC ts>), never deleted."""

UP_HELP = """Kubernetes back after etcd, end to end: observe the recovered etcd, decide as `kubernetes
plan` does, and plan the steps: each recovered etcd host's /etc/kubernetes/ssl copied to ssl_old and
etcd restarted reading it (rke up regenerates ssl), the new cluster.yml and state file written beside
the operator's and uploaded to the deploy host, `rke up` there (its log streamed, bounded by
rke.up_timeout, its failures classified), then /readyz on every controlplane host and the objects
under /registry counted per resource against those recorded before the fault. The plan is shown
first; nothing changes without --yes or a typed confirmation. Journalled: a re-run resumes."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kubernetes", help="Kubernetes back after etcd: the rke up that can succeed")
    ksub = p.add_subparsers(dest="kubernetes_command", metavar="ACTION", required=True)
    plan = ksub.add_parser(
        "plan", help="decide how rke up can succeed (changes nothing)", description=PLAN_HELP
    )
    add_inventory_arg(plan)
    plan.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    plan.set_defaults(func=_plan)
    yml = ksub.add_parser(
        "cluster-yml", help="write the cluster.yml rke up can succeed with", description=YML_HELP
    )
    add_inventory_arg(yml)
    yml.add_argument("-o", "--output", type=Path, help="the new cluster.yml (default: cluster.recovered.yml)")
    yml.add_argument("--json", action="store_true", help="print the files written, the diff and the decision")
    yml.set_defaults(func=_cluster_yml)
    counts = ksub.add_parser(
        "counts",
        help="count the objects under /registry per resource (--record: keep them for the API check)",
        description="Count the objects under /registry per resource prefix on the cluster's etcd (it "
        "needs quorum). --record keeps them in the state directory (registry-counts.json): what "
        "`restore-kubernetes` checks the API against after a fault. Run it (or schedule it) before one.",
    )
    add_inventory_arg(counts)
    counts.add_argument(
        "--record", action="store_true", help="write them to <state dir>/registry-counts.json"
    )
    counts.add_argument("--json", action="store_true", help="print them as one JSON object")
    counts.set_defaults(func=_counts)
    _up_args(ksub.add_parser("up", help="the same as `etcd-dr restore-kubernetes`", description=UP_HELP))
    _up_args(
        sub.add_parser(
            "restore-kubernetes",
            help="Kubernetes back after etcd: ssl_old, cluster.yml, rke up, the API checked",
            description=UP_HELP,
        )
    )


def _up_args(p: argparse.ArgumentParser) -> None:
    add_inventory_arg(p)
    p.add_argument("--plan", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="execute without asking")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: the decision, /readyz per controlplane host, objects before and after",
    )
    p.set_defaults(func=_up)


def _counts(args: argparse.Namespace) -> int:
    from etcd_dr.kubernetes.run import count_objects

    res = count_objects(inventory_from_args(args), record=args.record)

    def text() -> str:
        lines = [f"{p}: {n}" for p, n in res.counts.items()]
        lines.append(f"{sum(res.counts.values())} objects")
        if res.recorded:
            lines.append(f"recorded: {res.recorded}")
        if res.moved_aside:
            lines.append(f"the counts recorded before were kept as {res.moved_aside}")
        return "\n".join(lines)

    emit(args.json, res.to_json, text)
    return exit_for(True)


def _ask(plan: Plan) -> bool:
    print(plan.render())
    return input(f"type {plan.cluster} to execute this plan: ").strip() == plan.cluster


def _up(args: argparse.Namespace) -> int:
    from etcd_dr.kubernetes.run import restore_kubernetes

    inv = inventory_from_args(args)
    say = (lambda _m: None) if args.json else print
    confirm = _ask if (not args.yes and not args.json and sys.stdin.isatty()) else None
    res = restore_kubernetes(inv, yes=args.yes, plan_only=args.plan, say=say, confirm=confirm)
    emit(args.json, res.to_json, lambda: _up_text(res, asked=confirm is not None))
    if not res.ok:
        print(f"etcd-dr: {res.reason}", file=sys.stderr)
    return exit_for(res)


def _up_text(res: KubernetesResult, *, asked: bool) -> str | None:
    from etcd_dr.kubernetes.run import KubernetesStatus

    if res.status in (KubernetesStatus.PLANNED, KubernetesStatus.NOT_CONFIRMED):
        if asked:
            return None
        return res.plan.render() + (f"\n{res.diff.rstrip()}" if res.diff else "")
    if res.status not in (KubernetesStatus.RESTORED, KubernetesStatus.FAILED):
        return None
    lines = [f"{res.status} in {res.timings.get('total', 0):.2f} s"]
    lines += [f"  {h} /readyz: {'ok' if said is None else said}" for h, said in res.ready.items()]
    for p in sorted({*res.counts_before, *res.counts_after}):
        lines.append(f"  {p}: {res.counts_before.get(p, 0)} before, {res.counts_after.get(p, '?')} after")
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> int:
    from etcd_dr.kubernetes.decide import decide

    res = decide(inventory_from_args(args))
    emit(args.json, res.to_json, lambda: _text(res))
    return exit_for(res)


def _cluster_yml(args: argparse.Namespace) -> int:
    from etcd_dr.kubernetes.clusteryml import write_recovered
    from etcd_dr.kubernetes.decide import decide

    res = decide(inventory_from_args(args))
    if not res.decision.ok:
        emit(args.json, res.to_json, lambda: _text(res) + "\nnothing written")
        return exit_for(res)
    w = write_recovered(
        res.cluster_yml, res.state_file, res.kube_config, res.config, res.decision, output=args.output
    )

    def text() -> str:
        lines = [_text(res), w.diff.rstrip("\n"), f"written: {w.cluster_yml}", f"written: {w.state_file}"]
        if w.decision.rewrite_current_plane:
            lines[-1] += " (currentState without its etcd plane: RKE compares the new plane with it)"
        if w.kube_config:
            lines.append(f"written: {w.kube_config}")
        lines += [f"moved aside: {p}" for p in w.moved_aside]
        lines.append(f"next: rke up --config {w.cluster_yml.name} (on the deploy host)")
        return "\n".join(lines)

    emit(args.json, w.to_json, text)
    return exit_for(w)


def _text(res: Decided) -> str:
    d = res.decision
    lines = [f"etcd: {res.state.verdict}", f"{d.decision}: {d.reason}"]
    for c in d.nodes:
        after = "removed from nodes" if c.after is None else f"role [{', '.join(c.after)}]"
        lines.append(f"  nodes[{c.index}] {c.address} ({c.name}): [{', '.join(c.before)}] -> {after}")
    if d.refusal is not None and d.refusal.message:
        lines += [f"rke up would end in: {d.refusal.message}", f"  because {d.refusal.why}"]
    if d.fix:
        lines.append(f"fix: {d.fix}")
    if d.as_is is not None:
        lines += [f"the cluster.yml as it is would end in: {d.as_is.message}", f"  because {d.as_is.why}"]
    return "\n".join(lines)
