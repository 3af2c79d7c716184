"""Pure judgement of what a readiness round gathered: each function turns facts into CheckResults,
each one sentence with a hint. Unit-tested on fixtures; no I/O here."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from etcd_dr.deltalog.stream import StreamState, StreamStatus
from etcd_dr.etcd.client import Alarm
from etcd_dr.hostcare import ClockSample, skew
from etcd_dr.inventory import Inventory
from etcd_dr.readiness.model import (
    CertFile,
    CertKind,
    Check,
    CheckResult,
    DiskFree,
    FailCause,
    Failed,
    Gathered,
    Readiness,
    failed,
    passed,
)
from etcd_dr.snapshots import SnapshotRecord
from etcd_dr.state import FORK_ADVICE, ClusterState
from etcd_dr.units import human_bytes

_ALARM_HINTS = {
    "NOSPACE": "the db hit its quota and etcd refuses writes: compact, defragment each member, then "
    "`etcdctl alarm disarm`; raise --quota-backend-bytes if the data really grew",
    "CORRUPT": "a member's data diverged from the others: stop that member, remove it and re-add it "
    "from a healthy one; do not disarm the alarm first",
}
_TAKE_SNAPSHOT = "take one now (`etcd-dr snapshot take`, or the snapshot flow) and check its schedule"


def _reissue(host: str) -> str:
    return f"re-issue it with the cluster CA and restart etcd there (`etcd-dr cert renew --host {host}`)"


def evaluate_host_key(host: str, reason: str, known_hosts: Path | str, *, critical: bool) -> CheckResult:
    """SSH refused the host's key: say that, and how to fix it. Nothing was read from the host, so
    no other check of it may guess at a cause (an unreadable certificate here is not a bad one)."""
    return failed(
        Check.SSH,
        host,
        reason,
        f"{host}'s SSH host key changed or is unknown: check the key on {host}'s console "
        "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`); if the host was reinstalled, put that "
        f"key in {known_hosts} in place of the old line (`ssh-keygen -R <address> -f {known_hosts}`), "
        "else treat the connection as intercepted; its certificates, clock and disk are checked once "
        "SSH trusts it",
        critical=critical,
    )


def _not_checked(check: Check, host: str) -> CheckResult:
    """A check of a host whose SSH host key was refused: unknown, never judged (not critical: the
    ssh result is)."""
    return failed(
        check,
        host,
        f"not checked: SSH refused {host}'s host key",
        "fix the host key first (the ssh result above)",
        critical=False,
    )


def _host_key_refusal(*probes: object) -> Failed | None:
    return next((p for p in probes if isinstance(p, Failed) and p.cause is FailCause.HOST_KEY), None)


def evaluate_quorum(state: ClusterState | Failed) -> CheckResult:
    if isinstance(state, Failed):
        return failed(
            Check.QUORUM,
            None,
            f"the cluster could not be observed: {state.reason}",
            "run `etcd-dr status` to see which members answer",
        )
    if state.forked:
        # two sides each with a majority of their own membership: "quorum" is the wrong question
        return failed(Check.FORK, None, state.verdict, FORK_ADVICE)
    if state.quorum:
        return passed(Check.QUORUM, None, state.verdict)
    best = f" ({state.most_advanced})" if state.most_advanced else ""
    return failed(
        Check.QUORUM,
        None,
        state.verdict,
        "bring the lost masters back; if they cannot return, recover quorum with --force-new-cluster "
        f"on the most advanced survivor{best}",
    )


def evaluate_alarms(alarms: tuple[Alarm, ...] | Failed, state: ClusterState | Failed) -> list[CheckResult]:
    """NOSPACE and CORRUPT are critical. The alarm list needs quorum; without it, the alarms the
    members' Status reports stand in."""
    names: dict[int, str] = {}
    if not isinstance(state, Failed):
        names = {m.member_id: m.name for m in state.members if m.member_id is not None}
    if isinstance(alarms, Failed):
        alarms = _alarms_from_status(state) or alarms
    if isinstance(alarms, Failed):
        return [
            failed(
                Check.ALARMS,
                None,
                f"alarms could not be listed: {alarms.reason}",
                "listing alarms needs quorum; once it is back, run `etcdctl alarm list`",
                critical=False,
            )
        ]
    active = [a for a in alarms if a.alarm != "NONE"]
    if not active:
        return [passed(Check.ALARMS, None, "no alarm is raised")]
    out = []
    for a in active:
        who = names.get(a.member_id, f"{a.member_id:x}")
        hint = _ALARM_HINTS.get(a.alarm, "find out why in etcd's log (`etcdctl alarm list`)")
        out.append(failed(Check.ALARMS, who, f"alarm {a.alarm} is raised on member {who}", hint))
    return out


def _alarms_from_status(state: ClusterState | Failed) -> tuple[Alarm, ...]:
    """Status errors read like 'memberID:1234 alarm:NOSPACE'."""
    if isinstance(state, Failed):
        return ()
    return tuple(
        Alarm(m.member_id or 0, e.rsplit("alarm:", 1)[1].strip())
        for m in state.members
        for e in (m.status.errors if m.status else ())
        if "alarm:" in e
    )


def evaluate_learner(
    state: ClusterState | Failed, max_lag: int, candidates: tuple[str, ...] = ()
) -> list[CheckResult]:
    """Non-critical: a learner is the insurance for losing every master at once. candidates: the
    inventory hosts that could be one (named in the hint)."""
    if isinstance(state, Failed):
        return [
            failed(Check.LEARNER, None, "not checked: the cluster could not be observed", "", critical=False)
        ]
    learners = [m for m in state.members if m.is_learner and m.in_member_list]
    if not learners:
        where = candidates[0] if candidates else "HOST"
        return [
            failed(
                Check.LEARNER,
                None,
                "no learner: if the masters are lost together, no member outside them holds the data",
                f"add one in another failure domain: `etcd-dr learner add --host {where}`",
                critical=False,
            )
        ]
    voters = [m for m in state.members if not m.is_learner and m.status is not None]
    ref = next((m for m in voters if m.name == state.leader), None) or max(
        voters, key=lambda m: m.status.raft_index if m.status else 0, default=None
    )
    out = []
    for lm in learners:
        if lm.status is None:
            out.append(
                failed(
                    Check.LEARNER,
                    lm.name,
                    f"learner {lm.name} does not answer ({lm.etcd_error or 'no status'})",
                    f"check etcd on {lm.name} (`etcd-dr status`): a learner that is down protects nothing",
                    critical=False,
                )
            )
        elif ref is None or ref.status is None:
            out.append(
                failed(
                    Check.LEARNER,
                    lm.name,
                    f"learner {lm.name} is at raft index {lm.status.raft_index}; no voter answers to "
                    "compare with",
                    "restore quorum first",
                    critical=False,
                )
            )
        else:
            out.append(learner_lag(lm.name, ref.name, ref.status.raft_index, lm.status.raft_index, max_lag))
    return out


def learner_lag(learner: str, ref: str, ref_index: int, learner_index: int, max_lag: int) -> CheckResult:
    lag = max(0, ref_index - learner_index)  # read a moment apart: never report a negative lag
    what = f"learner {learner} is {lag} raft entries behind {ref} (limit {max_lag})"
    if lag <= max_lag:
        return passed(Check.LEARNER, learner, what, critical=False)
    return failed(
        Check.LEARNER,
        learner,
        what,
        f"find out why {learner} falls behind (its link, its disk, etcd's log there): a lagging learner "
        "would lose the newest writes",
        critical=False,
    )


def evaluate_snapshot(
    record: SnapshotRecord | Failed | None, now: dt.datetime, max_age_hours: float, where: Path
) -> CheckResult:
    """Critical: without a recent verified snapshot a restore loses data or has nothing to use."""
    if isinstance(record, Failed):
        return failed(
            Check.SNAPSHOT,
            None,
            f"the snapshot catalog could not be read: {record.reason}",
            f"fix the catalog in {where}, or {_TAKE_SNAPSHOT}",
        )
    if record is None:
        return failed(
            Check.SNAPSHOT,
            None,
            f"no verified snapshot in {where}: a restore has nothing to start from",
            _TAKE_SNAPSHOT,
        )
    age_h = (now - record.created).total_seconds() / 3600
    what = (
        f"the newest verified snapshot ({record.id}, revision {record.revision}, "
        f"{human_bytes(record.size)}) is {_age(age_h)} old (limit {max_age_hours:g} h)"
    )
    if age_h <= max_age_hours:
        return passed(Check.SNAPSHOT, None, what)
    return failed(Check.SNAPSHOT, None, what, f"{_TAKE_SNAPSHOT}: a restore would lose every write since")


_START_STREAM = "start it again (`etcd-dr backup stream`, run as a service per cluster)"


def evaluate_deltalog(
    status: StreamStatus | Failed | None, now: float, max_lag_s: float
) -> CheckResult | None:
    """Where a delta log watcher runs, how far it is behind: a restore to the last second depends
    on it. No result where none ever ran (status.json absent): the log is optional."""
    if status is None:
        return None
    if isinstance(status, Failed):
        return failed(Check.DELTALOG, None, f"the delta log status could not be read: {status.reason}", "")
    since = max(now - status.updated, 0.0)
    upto = f"revision {status.last_revision}"
    if status.state is StreamState.GAP:
        return failed(
            Check.DELTALOG,
            None,
            f"the delta log stopped at a gap after {upto}: {status.reason}",
            "take a new full snapshot (`etcd-dr snapshot`), then restart `etcd-dr backup stream`",
        )
    if status.state is StreamState.STOPPED or since > max(max_lag_s, 5.0):
        what = (
            "stopped" if status.state is StreamState.STOPPED else f"not updated its status (pid {status.pid})"
        )
        return failed(
            Check.DELTALOG,
            None,
            f"the delta log watcher has {what} {since:.0f} s ago at {upto}: a restore loses later writes",
            _START_STREAM,
        )
    if status.state is StreamState.WAITING:
        return failed(
            Check.DELTALOG, None, f"the delta log waits at {upto}: {status.reason}", "", critical=False
        )
    lag = status.lag_s(now)
    what = (
        f"the delta log holds every revision up to {upto}, {status.lag_revisions} behind the cluster"
        f" ({'unknown' if lag is None else f'{lag:.1f} s'}; limit {max_lag_s:g} s)"
    )
    if lag is not None and lag <= max_lag_s:
        return passed(Check.DELTALOG, None, what)
    return failed(Check.DELTALOG, None, what, "find out why it falls behind (its link, this machine's disk)")


def _age(hours: float) -> str:
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def go_time(t: dt.datetime) -> str:
    """A time as Go's crypto/x509 prints it in its errors (RFC 3339, whole seconds, UTC)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate_cert(
    cf: CertFile,
    host_now: dt.datetime,
    min_days: int,
    *,
    clock_note: str = "",
    ca: x509.Certificate | None = None,
) -> CheckResult:
    """A certificate against the clock of the host that uses it. Unreadable, expired or not yet
    valid: critical, in Go's x509 words (what etcd logs, as in the source incident). Expiring within
    min_days: a warning. With ca, a member certificate must be signed by it."""
    name, host = cf.path.rsplit("/", 1)[-1], cf.host
    if cf.pem is None:
        return failed(
            Check.CERT,
            host,
            f"{cf.path} cannot be read ({cf.error or 'unknown error'})",
            f"put the {cf.kind} certificate back from the cluster's RKE state (cluster.rkestate), or "
            f"{_reissue(host)}",
        )
    try:
        cert = x509.load_pem_x509_certificate(cf.pem)
    except ValueError:
        return failed(
            Check.CERT,
            host,
            f"{cf.path} is not a PEM certificate",
            "put back the PEM certificate from the RKE state",
        )
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    x509_error = (
        f"{name}: x509: certificate has expired or is not yet valid: current time {go_time(host_now)}"
    )
    if host_now < nb:
        ahead = (nb - host_now).total_seconds() / 3600
        return failed(
            Check.CERT,
            host,
            f"{x509_error} is before {go_time(nb)}",
            f"its validity starts {_age(ahead)} after {host}'s clock: if that clock is behind, sync it "
            "(chrony/ntp); if the certificate is wrong, re-issue it with a validity that starts in the past "
            f"and restart etcd there (`etcd-dr cert renew --host {host}`; `etcd-dr hosts clock` tells which)",
        )
    if host_now > na:
        return failed(
            Check.CERT,
            host,
            f"{x509_error} is after {go_time(na)}",
            f"etcd refuses it at its next handshake or restart: {_reissue(host)}",
        )
    if ca is not None and cf.kind is CertKind.MEMBER:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return failed(
                Check.CERT,
                host,
                f"{name} is not signed by the kube-ca.pem on {host}: its peers refuse it",
                f"{_reissue(host)}, or put back the kube-ca.pem that signed it",
            )
    days = (na - host_now).total_seconds() / 86400
    what = (
        f"{name} ({cf.kind}) expires in {days:.1f} days, on {go_time(na)} "
        f"(host clock {go_time(host_now)}{clock_note})"
    )
    if days < min_days:
        renew = (
            f"renew it before then: `etcd-dr cert renew --host {host}` (reissued, etcd restarted there; "
            "never where the restart would cost quorum), or `rke cert rotate` on RKE"
        )
        return failed(Check.CERT, host, f"{what}: under {min_days} days", renew, critical=False)
    return passed(Check.CERT, host, what)


def evaluate_clocks(clocks: Mapping[str, ClockSample | Failed], max_skew: float) -> list[CheckResult]:
    """One result per host: its clock against the hosts' median. A host fails when the largest
    pairwise skew exceeds max_skew beyond the measurement's error, and it is one of the hosts off
    the median. Non-critical: the certificate check already catches a skew that breaks TLS."""
    rep = skew({h: s for h, s in clocks.items() if isinstance(s, ClockSample)})
    bad = set(rep.outliers(max_skew)) if rep else set()
    out = []
    for h, s in clocks.items():
        if isinstance(s, Failed) and s.cause is FailCause.HOST_KEY:
            out.append(_not_checked(Check.CLOCK, h))
            continue
        if isinstance(s, Failed):
            out.append(
                failed(
                    Check.CLOCK,
                    h,
                    f"clock not measured: {s.reason}",
                    f"check that {h} is up and reachable over SSH",
                    critical=False,
                )
            )
            continue
        if rep is None:
            out.append(passed(Check.CLOCK, h, "the only host measured: no skew to compare", critical=False))
            continue
        dev = rep.deviations[h]
        side = "ahead of" if dev >= 0 else "behind"
        what = f"{abs(dev):.3f} s {side} the hosts' median (±{s.uncertainty_s:.3f} s)"
        if h not in bad:
            out.append(passed(Check.CLOCK, h, what, critical=False))
            continue
        out.append(
            failed(
                Check.CLOCK,
                h,
                f"{what}; the skew between {rep.ahead} and {rep.behind} is {rep.max_skew_s:.3f} s "
                f"(±{rep.uncertainty_s:.3f} s), over {max_skew:g} s",
                f"sync {h}'s clock (chrony/ntp): each host judges certificates by its own clock",
                critical=False,
            )
        )
    return out


def parse_df(text: str) -> tuple[int, int, str]:
    """The last line of `df -B1 --output=avail,size,target PATH`: (avail, size, mount)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    parts = lines[-1].split(None, 2) if lines else []
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError(f"unexpected df output: {(lines or [''])[-1][:80]!r}")
    return int(parts[0]), int(parts[1]), parts[2]


def evaluate_disk(host: str, disk: DiskFree | Failed, db_size: int | None, factor: float) -> CheckResult:
    """Critical: a restore stages a copy of the db beside the data dir before it swaps it in, so the
    filesystem must hold factor x the db."""
    if isinstance(disk, Failed) and disk.cause is FailCause.HOST_KEY:
        return _not_checked(Check.DISK, host)
    if isinstance(disk, Failed):
        return failed(
            Check.DISK,
            host,
            f"free disk not measured: {disk.reason}",
            f"check that {host} is up and `df` answers",
        )
    free = f"{human_bytes(disk.avail)} free on {disk.mount} (for {disk.path})"
    if db_size is None:
        return failed(
            Check.DISK,
            host,
            f"{free}; no member reported its db size, so the need is unknown",
            "restore quorum, then check again",
            critical=False,
        )
    need = int(factor * db_size)
    what = f"{free}; a restore needs {factor:g} x the {human_bytes(db_size)} db = {human_bytes(need)}"
    if disk.avail >= need:
        return passed(Check.DISK, host, what)
    return failed(
        Check.DISK,
        host,
        what,
        f"free {human_bytes(need - disk.avail)} more on {disk.mount} of {host} (old .bak-* data dirs, "
        "images, logs), or compact and defragment etcd to shrink the db",
    )


def assess(inv: Inventory, g: Gathered, now: dt.datetime | None = None) -> Readiness:
    """Judge what was gathered: cluster-wide checks first, then certificates, clocks, disks."""
    now = now or dt.datetime.now(dt.UTC)
    c, state = inv.check, g.state
    results = [evaluate_quorum(state), *evaluate_alarms(g.alarms, state)]
    candidates = tuple(h.name for h in inv.hosts if h.is_learner) or tuple(
        h.name for h in inv.hosts if not h.is_voter
    )
    results += evaluate_learner(state, c.learner_max_lag, candidates)
    results.append(evaluate_snapshot(g.snapshot, now, c.snapshot_max_age_hours, g.snapshot_dir))
    dl = evaluate_deltalog(g.deltalog, now.timestamp(), c.deltalog_max_lag_s)
    if dl is not None:
        results.append(dl)
    for h in inv.hosts:
        refused = _host_key_refusal(g.clocks.get(h.name), g.certs.get(h.name), g.disks.get(h.name))
        if refused is not None:
            kh, crit = inv.ssh.known_hosts, h.runs_etcd  # a worker's key is no member's problem
            results.append(evaluate_host_key(h.name, refused.reason, kh, critical=crit))
    for h in inv.etcd_hosts:
        sample = g.clocks.get(h.name)
        # a certificate is judged by the clock of the host that uses it
        host_now, note = (
            (sample.host_time, "")
            if isinstance(sample, ClockSample)
            else (now, "; unmeasured, this machine's")
        )
        files = g.certs.get(h.name, Failed("not gathered"))
        if isinstance(files, Failed) and files.cause is FailCause.HOST_KEY:
            results.append(_not_checked(Check.CERT, h.name))
            continue
        if isinstance(files, Failed):
            files = tuple(
                CertFile(h.name, kind, path, None, files.reason)
                for kind, path in (
                    (CertKind.MEMBER, inv.etcd.cert_path(h)),
                    (CertKind.CA, inv.etcd.ca_path()),
                )
            )
        ca = _load_ca(files)
        for cf in files:
            r = evaluate_cert(cf, host_now, c.cert_min_days, clock_note=note, ca=ca)
            if not r.ok and cf.pem is None and h.is_learner:
                r = dataclasses.replace(r, critical=False)  # a learner host not set up yet
            results.append(r)
    results += evaluate_clocks(g.clocks, c.max_clock_skew)
    db_sizes: dict[str, int] = {}
    if not isinstance(state, Failed):
        db_sizes = {m.host: m.status.db_size for m in state.members if m.host and m.status}
    biggest = max(db_sizes.values(), default=None)  # a member that did not answer: the cluster's db
    for h in inv.etcd_hosts:
        disk = g.disks.get(h.name, Failed("not gathered"))
        results.append(evaluate_disk(h.name, disk, db_sizes.get(h.name, biggest), c.min_free_factor))
    return Readiness(inv.cluster, now, tuple(results), g.deadline_s, g.finished - g.started)


def _load_ca(files: tuple[CertFile, ...]) -> x509.Certificate | None:
    pem = next((cf.pem for cf in files if cf.kind is CertKind.CA and cf.pem), None)
    try:
        return x509.load_pem_x509_certificate(pem) if pem else None
    except ValueError:
        return None  # reported by its own result
