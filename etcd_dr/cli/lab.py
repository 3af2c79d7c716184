"""`etcd-dr lab ...`: build and drive the multi-host lab (root only)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from etcd_dr.cli.common import table
from etcd_dr.cli.result import Exit, exit_for
from etcd_dr.errors import InputError
from etcd_dr.inventory import RuntimeKind
from etcd_dr.lab import lifecycle
from etcd_dr.lab.alerting import DEFAULT_RECEIVER
from etcd_dr.lab.config import (
    DEFAULT_SUBNET,
    HOST_NAMES,
    EtcdSeries,
    LabConfig,
    LabState,
    env_lab_dir,
    env_prefix,
    env_subnet,
    incomplete,
    resolve_config,
    validate_prefix,
)

UP_HELP = """Build the lab: hosts master1-3, node1, node2 (addresses .11 .12 .13 .21 .22 of the subnet, bridge
.1), each with sshd and dockerd, a kube-ca and member certificates at RKE's paths, and etcd voters on
master1-3 (container `etcd` or, with --runtime process, a unit started at boot); with --learner, node1
then joins as a learner through `etcd-dr learner add` (its certificate signed with the kube-ca key the
lab keeps on the masters, at /etc/kubernetes/ssl/kube-ca-key.pem). Always a fresh lab:
whatever an earlier lab with this prefix left (also a lab that is up) is torn down first, its disks
wiped. --resume instead boots the hosts again on the disks `lab down` kept. Writes
<dir>/inventory.yaml, which every other etcd-dr command uses when given no inventory.
Env: ETCD_DR_LAB_PREFIX, ETCD_DR_LAB_SUBNET, ETCD_DR_LAB_DIR."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=None, help="lab name prefix (default: $ETCD_DR_LAB_PREFIX or edr)")
    p.add_argument("--dir", type=Path, default=None, help="lab dir (default: /tmp/etcd-dr/lab-<prefix>)")


def _config(args: argparse.Namespace) -> LabConfig:
    prefix = validate_prefix(args.prefix) if args.prefix else None
    return resolve_config(prefix=prefix, lab_dir=args.dir)


def _host(name: str) -> str:
    if name not in HOST_NAMES:
        raise InputError(f"no lab host named {name!r} (hosts: {', '.join(HOST_NAMES)})")
    return name


def cmd_up(args: argparse.Namespace) -> int:
    lifecycle.require_root()
    prefix = validate_prefix(args.prefix or env_prefix())
    if args.resume:
        cfg = resolve_config(prefix=prefix, lab_dir=args.dir)
    else:
        cfg = LabConfig(
            prefix=prefix,
            subnet=args.subnet or env_subnet(),
            dir=args.dir or env_lab_dir(prefix),
            etcd=EtcdSeries(args.etcd),
            runtime=RuntimeKind(args.runtime),
            learner_etcd=EtcdSeries(args.learner_etcd or args.etcd) if args.learner else None,
        )
    if args.learner_etcd and not args.learner:
        raise InputError("--learner-etcd needs --learner (node1 joins as a learner only when asked)")
    t0 = time.monotonic()
    state = lifecycle.up(cfg, resume=args.resume, say=print)
    c = state.config
    print(
        f"lab '{c.prefix}' up in {time.monotonic() - t0:.1f} s: "
        f"etcd {state.etcd_version}, runtime {c.runtime}"
    )
    print(f"inventory: {c.inventory_path}")
    if args.alerting:
        _alerting_up(state, args)
    print(f"next: etcd-dr status -i {c.inventory_path}")
    return Exit.OK


def _alerting_up(state: LabState, args: argparse.Namespace) -> None:
    from etcd_dr.lab import alerting

    d = state.config.dir / "alerting"
    token = args.alert_token_file or alerting.lab_token(d)
    a = alerting.start(lifecycle.inventory_of(state), d, receiver=args.receiver, token_file=token)
    print(f"Prometheus: {a.prometheus_url} (alerts: {a.prometheus_url}/alerts; PID {a.prometheus_pid})")
    print(
        f"Alertmanager: {a.alertmanager_url} (PID {a.alertmanager_pid}) -> {a.receiver}/alerts/alertmanager"
    )
    print(f"configs and logs: {d}; the rules are the etcd mixin's with `for:` shortened for the lab")
    print(f"the receiver: etcd-dr server --inventories <dir with {state.config.inventory_path.name}> "
          f"--receiver-port {urlsplit(a.receiver).port} --alert-token-file {token}")  # fmt: skip


def cmd_down(args: argparse.Namespace) -> int:
    cfg = _config(args)
    lifecycle.down(cfg, wipe=args.wipe)
    return Exit.OK


def cmd_power(args: argparse.Namespace) -> int:
    cfg = _config(args)
    host = _host(args.host)
    if args.state == "off":
        lifecycle.power_off(cfg, host)
    else:
        lifecycle.power_on(cfg, host)
    return Exit.OK


def cmd_plug(args: argparse.Namespace) -> int:
    cfg = _config(args)
    lifecycle.set_plugged(cfg, _host(args.host), args.plugged)
    return Exit.OK


def cmd_ssh(args: argparse.Namespace) -> int:
    """With a command: over SSHExecutor (paramiko, strict host keys), its output and exit code.
    Without: an interactive shell through the system ssh client (same key and known_hosts)."""
    cfg = _config(args)
    host = _host(args.host)
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
    if not command:
        return subprocess.run(
            lifecycle.ssh_argv(cfg, host, [], tty=sys.stdin.isatty()), check=False
        ).returncode
    from etcd_dr.executor import SSHExecutor

    inv = lifecycle.inventory_of(lifecycle.load_state(cfg))
    with SSHExecutor(inv.host(host), inv.ssh) as ex:
        # like ssh(1): the words are joined and the host's shell interprets them
        r = ex.run(["sh", "-c", " ".join(command)], check=False, timeout=args.timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.rc


def cmd_env(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print("\n".join(lifecycle.env_lines(cfg)))
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = lifecycle.status(cfg)

    def yn(v: bool | None, yes: str, no: str) -> str:
        return "-" if v is None else (yes if v else no)

    print(
        table(
            ("HOST", "ADDRESS", "POWER", "PID", "LINK", "ETCD"),
            [
                (
                    r.name,
                    r.address,
                    yn(r.power, "on", "off"),
                    r.pid or "-",
                    yn(r.link, "up", "down"),
                    yn(r.etcd, "running", "stopped"),
                )
                for r in rows
            ],
        )
    )
    print(f"lab '{cfg.prefix}' {cfg.subnet} etcd {cfg.etcd} runtime {cfg.runtime} dir {cfg.dir}")
    state = LabState.load(cfg.dir)
    missing = incomplete(state) if state is not None else None
    if missing:
        print(missing)
    return exit_for(all(r.power for r in rows) and not missing)


def add_parser(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="a real multi-host RKE-style etcd lab on this machine (root)")
    lsub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    p = lsub.add_parser(
        "up", help="build the lab (tears down and rebuilds one that is up)", description=UP_HELP
    )
    _common(p)
    p.add_argument("--etcd", choices=[e.value for e in EtcdSeries], default=EtcdSeries.V3_4.value)
    p.add_argument("--runtime", choices=[r.value for r in RuntimeKind], default=RuntimeKind.DOCKER.value)
    p.add_argument(
        "--subnet", default=None, help=f"an IPv4 /24 (default: $ETCD_DR_LAB_SUBNET or {DEFAULT_SUBNET})"
    )
    p.add_argument("--resume", action="store_true", help="boot the kept disks of a lab that is down")
    p.add_argument(
        "--learner",
        action="store_true",
        help="then add node1 as an etcd learner with `etcd-dr learner add` (inventory role etcd-learner)",
    )
    p.add_argument(
        "--learner-etcd",
        choices=[e.value for e in EtcdSeries],
        default=None,
        help="etcd series of node1's learner (default: --etcd); 3.4 voters + a 3.5 learner: the incident",
    )
    p.add_argument(
        "--alerting",
        action="store_true",
        help="also start Prometheus (the etcd mixin's rules over the members' metrics) and Alertmanager "
        "(to --receiver) as this machine's processes on loopback; `lab down` stops them",
    )
    p.add_argument(
        "--receiver",
        default=DEFAULT_RECEIVER,
        help=f"with --alerting: the base URL of etcd-dr server's receiver (default {DEFAULT_RECEIVER})",
    )
    p.add_argument(
        "--alert-token-file",
        type=Path,
        default=None,
        help="with --alerting: the receiver's token file (default: one made in <lab dir>/alerting/token)",
    )
    p.set_defaults(func=cmd_up)

    p = lsub.add_parser("down", help="power every host off and remove the network; disks stay")
    _common(p)
    p.add_argument(
        "--wipe", action="store_true", help="also delete host disks, keys, certs and the inventory"
    )
    p.set_defaults(func=cmd_down)

    p = lsub.add_parser(
        "power", help="power a host off (link down + SIGKILL of its PID 1) or on (boot, link up)"
    )
    _common(p)
    p.add_argument("host", metavar="HOST")
    p.add_argument("state", choices=["off", "on"])
    p.set_defaults(func=cmd_power)

    for name, plugged in (("unplug", False), ("plug", True)):
        p = lsub.add_parser(name, help=f"{name} a host's network cable (processes keep running)")
        _common(p)
        p.add_argument("host", metavar="HOST")
        p.set_defaults(func=cmd_plug, plugged=plugged)

    p = lsub.add_parser(
        "ssh",
        help="ssh into a host (strict host keys): lab ssh [--prefix P] HOST -- CMD",
    )
    _common(p)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the command (default 60)")
    p.add_argument("host", metavar="HOST")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)

    p = lsub.add_parser("env", help="print ETCDCTL_* exports so etcdctl on this machine talks to the lab")
    _common(p)
    p.set_defaults(func=cmd_env)

    p = lsub.add_parser("status", help="hosts on/off, links, PIDs, etcd running")
    _common(p)
    p.set_defaults(func=cmd_status)
