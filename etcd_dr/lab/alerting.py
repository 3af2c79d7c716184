"""A real alert chain in front of `etcd-dr server` for the lab: Debian's Prometheus scrapes the lab's
etcd members and evaluates the etcd mixin's rules; Debian's Alertmanager sends what fires to the
receiver's webhook. Both run as child processes of this machine (never their Debian services), on
loopback ports, with their config and data in <lab dir>/alerting; `stop` ends them by the PIDs
written there.

Metrics come from each member's client URL (https, client-cert auth, the inventory's client
certificate): what RKE's etcd serves, so no lab-only flag (`--listen-metrics-urls`) makes the lab
differ from the clusters the rules are for."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
STATE = "alerting.json"
TOKEN_FILE = "token"
DEFAULT_RECEIVER = "http://127.0.0.1:9095"
SCRAPE_S = 2  # the lab's scrape and evaluation interval (the mixin assumes 30 s)
WATCHED = ("etcdInsufficientMembers", "etcdNoLeader", "etcdMembersDown")

# The etcd mixin's rules (etcd-io/etcd contrib/mixin/alerts/alerts.libsonnet, config.libsonnet:
# etcd_selector job=~".*etcd.*", etcd_instance_labels instance, clusterLabel cluster), the
# expressions as they are there. SHORTENED FOR THE LAB: `for:` (the mixin's 10m / 3m / 1m) and the
# peer-failure rate window (4 scrape intervals: 8 s here, 120 s there), so a test sees them fire.
SELECTOR = 'job=~".*etcd.*"'
LAB_FOR = {"etcdMembersDown": "10s", "etcdInsufficientMembers": "4s", "etcdNoLeader": "4s"}
MIXIN_FOR = {"etcdMembersDown": "10m", "etcdInsufficientMembers": "3m", "etcdNoLeader": "1m"}


def mixin_rules(scrape_s: int = SCRAPE_S) -> dict:
    window = scrape_s * 4
    return {
        "groups": [
            {
                "name": "etcd",
                "rules": [
                    {
                        "alert": "etcdMembersDown",
                        "expr": (
                            "max without (endpoint) (\n"
                            f"  sum without (instance) (up{{{SELECTOR}}} == bool 0)\n"
                            "or\n"
                            "  count without (To) (\n"
                            "    sum without (instance) (rate(etcd_network_peer_sent_failures_total"
                            f"{{{SELECTOR}}}[{window}s])) > 0.01\n"
                            "  )\n"
                            ")\n"
                            "> 0\n"
                        ),
                        "for": LAB_FOR["etcdMembersDown"],
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "description": 'etcd cluster "{{ $labels.cluster }}": '
                            "members are down ({{ $value }}).",
                            "summary": "etcd cluster members are down.",
                        },
                    },
                    {
                        "alert": "etcdInsufficientMembers",
                        "expr": (
                            f"sum(up{{{SELECTOR}}} == bool 1) without (instance) < "
                            f"((count(up{{{SELECTOR}}}) without (instance) + 1) / 2)\n"
                        ),
                        "for": LAB_FOR["etcdInsufficientMembers"],
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "description": 'etcd cluster "{{ $labels.cluster }}": '
                            "insufficient members ({{ $value }}).",
                            "summary": "etcd cluster has insufficient number of members.",
                        },
                    },
                    {
                        "alert": "etcdNoLeader",
                        "expr": f"etcd_server_has_leader{{{SELECTOR}}} == 0\n",
                        "for": LAB_FOR["etcdNoLeader"],
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "description": 'etcd cluster "{{ $labels.cluster }}": '
                            "member {{ $labels.instance }} has no leader.",
                            "summary": "etcd cluster has no leader.",
                        },
                    },
                ],
            }
        ]
    }


@dataclass(frozen=True)
class Alerting:
    """Where a running chain is: written to <dir>/alerting.json by start, read by stop."""

    dir: str
    prometheus_port: int
    alertmanager_port: int
    receiver: str
    prometheus_pid: int
    alertmanager_pid: int

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _path(d: Path, name: str, v: object) -> str:
    """A client TLS file as a path Prometheus can read (an in-memory one written 0600 into d)."""
    if isinstance(v, Path):
        return str(v)
    p = d / name
    p.touch(mode=0o600)
    p.write_bytes(bytes(v))  # type: ignore[arg-type]  # an InMemoryFile is the bytes
    return str(p)


def write_configs(
    inv: Inventory, d: Path, *, alertmanager_port: int, receiver: str, token_file: Path
) -> tuple[Path, Path]:
    """prometheus.yml (+ etcd-rules.yml) and alertmanager.yml in d. The token stays in its file:
    Alertmanager reads it (`credentials_file`); it is in no config, argv or log."""
    tls = inv.etcd.client
    files = {k: _path(d, f"client-{k}.pem", getattr(tls, k)) for k in ("ca_cert", "cert", "key")}
    (d / "etcd-rules.yml").write_text(yaml.safe_dump(mixin_rules(), sort_keys=False))
    prom = {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s",
            "evaluation_interval": f"{SCRAPE_S}s",
            "scrape_timeout": f"{SCRAPE_S}s",
        },
        "rule_files": [str(d / "etcd-rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "etcd",
                "scheme": "https",
                "tls_config": {
                    "ca_file": files["ca_cert"],
                    "cert_file": files["cert"],
                    "key_file": files["key"],
                },
                "static_configs": [
                    {
                        "targets": [f"{h.address}:{inv.etcd.client_port}" for h in inv.voters],
                        "labels": {"cluster": inv.cluster},  # the receiver maps alerts by it
                    }
                ],
            }
        ],
    }
    am = {
        "route": {
            "receiver": "etcd-dr",
            "group_by": ["cluster"],
            # the lab's: Alertmanager's defaults are 30 s / 5 m / 4 h
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1m",
            "routes": [{"receiver": "etcd-dr", "matchers": [f'alertname=~"{"|".join(WATCHED)}"']}],
        },
        "receivers": [
            {
                "name": "etcd-dr",
                "webhook_configs": [
                    {
                        "url": f"{receiver.rstrip('/')}/alerts/alertmanager",
                        "send_resolved": True,
                        "http_config": {"authorization": {"credentials_file": str(token_file)}},
                    }
                ],
            }
        ],
    }
    (d / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
    (d / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
    return d / "prometheus.yml", d / "alertmanager.yml"


def lab_token(d: Path) -> Path:
    """The lab's token file (0600; made once): give it to `etcd-dr server --alert-token-file`."""
    p = d / TOKEN_FILE
    if not p.exists():
        d.mkdir(parents=True, exist_ok=True)
        p.touch(mode=0o600)
        p.write_text(secrets.token_urlsafe(24) + "\n")
    return p


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx  # only here: ~0.2 s to import, and every `etcd-dr` command that finds the lab imports this

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise InputError(f"{url}: exited with {proc.returncode}: " + " | ".join(tail))
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise InputError(f"{url} not ready after {timeout:.0f} s (log: {log})")


def start(
    inv: Inventory,
    d: Path,
    *,
    receiver: str = DEFAULT_RECEIVER,
    token_file: Path | None = None,
    prometheus_port: int = 0,
    alertmanager_port: int = 0,
    timeout: float = 60,
) -> Alerting:
    """Write the configs and start Prometheus and Alertmanager (their own sessions, logs in d);
    a chain already running from d is stopped first."""
    for b in (PROMETHEUS, ALERTMANAGER):
        if not os.access(b, os.X_OK):
            raise InputError(f"{b}: not installed; run scripts/install.sh (Debian's prometheus and "
                             "prometheus-alertmanager)")  # fmt: skip
    u = urlsplit(receiver)
    if u.scheme not in ("http", "https") or not u.hostname or not u.port or u.path not in ("", "/"):
        raise InputError(f"--receiver {receiver!r}: give the receiver's base URL, e.g. {DEFAULT_RECEIVER}")
    token_file = token_file or lab_token(d)
    if not token_file.is_file():
        raise InputError(f"--alert-token-file {token_file}: no such file (one line: the receiver's token)")
    stop(d)
    d.mkdir(parents=True, exist_ok=True)
    pport, aport = prometheus_port or free_port(), alertmanager_port or free_port()
    prom_cfg, am_cfg = write_configs(
        inv, d, alertmanager_port=aport, receiver=receiver, token_file=token_file
    )
    procs: list[subprocess.Popen] = []
    try:
        for name, argv in (
            (
                "alertmanager",
                [
                    ALERTMANAGER,
                    f"--config.file={am_cfg}",
                    f"--storage.path={d / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{aport}",
                    "--cluster.listen-address=",
                ],
            ),  # no gossip port: one Alertmanager
            (
                "prometheus",
                [
                    PROMETHEUS,
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={d / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{pport}",
                    "--web.enable-lifecycle",
                ],
            ),
        ):
            log = d / f"{name}.log"
            with log.open("ab") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                              start_new_session=True))  # fmt: skip
            port = aport if name == "alertmanager" else pport
            _wait_ready(f"http://127.0.0.1:{port}", procs[-1], log, timeout)
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        raise
    a = Alerting(str(d), pport, aport, receiver, procs[1].pid, procs[0].pid)
    (d / STATE).write_text(json.dumps(asdict(a)))
    return a


def running(d: Path) -> Alerting | None:
    try:
        return Alerting(**json.loads((d / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _ours(pid: int, binary: str) -> bool:
    """pid is still the binary we started (not a reused PID)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == binary
    except OSError:
        return False


def stop(d: Path, timeout: float = 15) -> list[int]:
    """SIGTERM to the PIDs in <d>/alerting.json that still run our binaries, SIGKILL after timeout."""
    a = running(d)
    if a is None:
        return []
    pids = [p for p, b in ((a.prometheus_pid, PROMETHEUS), (a.alertmanager_pid, ALERTMANAGER)) if _ours(p, b)]
    for p in pids:
        os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in pids:
        while _alive(p) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(p):
            os.kill(p, signal.SIGKILL)
    for p in pids:  # our children when started by this process: reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, os.WNOHANG)
    (d / STATE).unlink(missing_ok=True)
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
