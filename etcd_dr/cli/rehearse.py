"""`etcd-dr rehearse`: a disaster and its recovery on the lab, measured (etcd_dr.lab.rehearsal.run).
Exit 0 recovered with no loss beyond what the plan allowed and rejoined (the incident: every phase
ok), 1 otherwise, 2 bad input. The default scenario is the source incident, the README's main job."""

from __future__ import annotations

import argparse
import sys

from etcd_dr.cli.result import emit, exit_for
from etcd_dr.lab.rehearsal.report import RehearsalReport
from etcd_dr.lab.rehearsal.run import RehearsalOptions, lab_config_from_env, rehearse
from etcd_dr.lab.rehearsal.scenarios import Return, Scenario
from etcd_dr.recovery.plan import VoterMethod


def cmd_rehearse(args: argparse.Namespace) -> int:
    opts = RehearsalOptions(
        scenario=Scenario(args.scenario),
        keys=args.keys,
        keep_lab=args.keep_lab,
        voter_method=VoterMethod(args.voter_method),
        rejoin=not args.no_rejoin,
        watch_returning_s=args.watch_returning,
        returns=Return(args.returns) if args.returns else None,
        deltalog=args.deltalog,
        through_kubernetes=args.through_kubernetes,
    )
    report = rehearse(opts, lab_config_from_env(), say=lambda m: print(m, file=sys.stderr, flush=True))
    emit(args.json, report.to_json, lambda: _text(report))
    return exit_for(report.ok)


def _text(report: RehearsalReport) -> str:
    j = report.to_json()
    if report.phases:
        return _incident_text(report, j)
    return (
        f"{report.verdict}\n"
        f"RTO {j['rto_s']} s (first write {j['first_write_s']} s), RPO {j['rpo_writes']} writes, "
        f"{j['acknowledged']} acknowledged, "
        f"{j['unacknowledged_landed']} of {j['unacknowledged']} unacknowledged landed; "
        f"writer log {report.log}"
        + (f"\nRTO to a ready Kubernetes API {j['rto_api_s']} s" if report.kubernetes else "")
    )


def _incident_text(report: RehearsalReport, j: dict) -> str:
    """One line per phase (its sentences are long: no table), the figures, the approvals, the verdict."""
    out = ["phases:"]
    for p in report.phases:
        secs = "-" if p.duration_s is None else f"{p.duration_s:.1f} s"
        out.append(f"  {p.phase:<12} {'ok' if p.ok else 'FAILED':<7} {secs:>8}  {p.sentence}")
    out += [
        "",
        f"RTO to etcd writes {j['rto_s']} s; RTO to a ready API {j['rto_api_s']} s; RPO {j['rpo_writes']} of "
        f"{j['acknowledged']} acknowledged writes lost ({j['lost_within_plan']} within the plan, "
        f"{j['lost_beyond_plan']} beyond it)",
        "",
        "approved as --yes (on the day a person approves each of these plans):",
    ]
    for a in j["approvals"] or [{"command": "none"}]:
        kinds = ", ".join(a.get("step_kinds", ()))
        what = f": {a['plan']} plan, {a['steps']} steps ({kinds})" if kinds else ""
        out.append(f"  {a['command']}{what}")
    out += ["", f"{'OK' if report.ok else 'FAILED'}: {report.verdict}", f"writer log {report.log}"]
    return "\n".join(out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rehearse",
        help="rehearse a disaster and its recovery on the lab; report RTO and RPO (root)",
        description="Build the lab (3 etcd 3.4 voters, a 3.5 learner on node1), write a data set, keep "
        "a writer writing, lose hosts (the scenario), recover with `etcd-dr recover --yes`, check every "
        "acknowledged write on the recovered member (RPO) and the first write accepted after the fault "
        "(RTO), bring the hosts back and rejoin them. Env: ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, "
        "ETCD_DR_LAB_DIR. Exit 0 when recovered with no loss beyond what the plan allowed and rejoined.",
    )
    p.add_argument(
        "--scenario",
        choices=[s.value for s in Scenario],
        default=Scenario.INCIDENT.value,
        help="incident (default: the source incident from power loss to the masters rejoined, Kubernetes "
        "and host repair included), masters-lost, all-voters-lost, all-lost",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    p.add_argument("--keys", type=int, default=500, help="keys in the data set written first (500)")
    p.add_argument(
        "--voter-method",
        choices=[m.value for m in VoterMethod],
        default=VoterMethod.FORCE_NEW_CLUSTER.value,
        help="how recover turns a surviving voter into a one-member cluster (masters-lost)",
    )
    p.add_argument("--no-rejoin", action="store_true", help="do not bring the lost hosts back")
    p.add_argument(
        "--return",
        dest="returns",
        choices=[r.value for r in Return],
        default=None,
        help="how the lost hosts come back: together (then rejoin --all) or one by one, each rejoined "
        "before the next (default: together for masters-lost, one-by-one when every voter was lost)",
    )
    p.add_argument(
        "--watch-returning",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds to watch returning hosts for an old cluster electing a leader (20; 0: off)",
    )
    p.add_argument(
        "--deltalog",
        action="store_true",
        help="all-lost: run the delta log (backup stream) from the snapshot on; recover rolls it forward",
    )
    p.add_argument(
        "--through-kubernetes",
        action="store_true",
        help="after the recovery, bring Kubernetes back (restore-kubernetes --yes: ssl_old, cluster.yml, "
        "the stand-in rke up, /readyz and the /registry objects checked) and report the RTO to a ready "
        "API beside the RTO to etcd writes",
    )
    p.set_defaults(func=cmd_rehearse)
