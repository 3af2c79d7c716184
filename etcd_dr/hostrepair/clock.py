"""`etcd-dr hosts clock`: each host's clock against this machine's, and every etcd and Kubernetes
certificate on each host judged by THAT host's clock; `--sync` steps the flagged clocks.

The source incident's last TLS failure was `x509: certificate has expired or is not yet valid:
current time 2022-06-01T04:49:01Z is before 2022-06-01T12:53:50Z`: certificates issued on a machine
whose clock was hours ahead, judged by hosts whose clocks were right. Whether the clock or the
certificate is wrong is the question this answers, per host and per file.

    rep = clock_report(inv)                      # measure (hostcare: several samples, round trip)
    rep = clock_report(inv, sync=True)           # step the flagged hosts' clocks, then measure again

The measurement is etcd_dr.hostcare.measure_clock, the same the readiness check (`etcd-dr check`)
uses. Certificates are read as their PEM CERTIFICATE blocks only (sed on the host): a key file, or a
key in a combined file, never leaves the host. `assess()` is pure; gather() and sync() talk to hosts.
"""

from __future__ import annotations

import datetime as dt
import enum
import posixpath
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from etcd_dr.certs import validity_problem
from etcd_dr.errors import CommandError
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.hostcare import ClockSample, SkewReport, measure_clock, skew
from etcd_dr.inventory import Host, Inventory
from etcd_dr.readiness.gather import run_all
from etcd_dr.readiness.model import Failed

# RKE's certificate directory and the copy `rke up` leaves after a rotation (the source incident
# pointed RKE's external etcd at ssl_old); the inventory's etcd.cert_dir is added.
KUBE_CERT_DIRS = ("/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old")
DEADLINE_S = 20.0
SAMPLES = 5  # the best of five round trips (shortest), as hostcare keeps it

# Every certificate under the dirs given, as `==> path` then its CERTIFICATE blocks only: private
# keys (`*-key.pem`, `*.key`, or a key inside a combined file) are never printed.
_READ_CERTS = r"""
for d in "$@"; do
  [ -d "$d" ] || continue
  for f in "$d"/*.pem "$d"/*.crt; do
    [ -f "$f" ] || continue
    case $f in *-key.pem|*.key) continue ;; esac
    echo "==> $f"
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f"
  done
done
"""
_FIND_TOOLS = "for t in chronyc ntpdate timedatectl; do command -v $t >/dev/null 2>&1 && echo $t; done; true"


class ClockVerdict(enum.StrEnum):
    OK = "ok"
    SKEWED = "skewed"  # off this machine by more than check.max_clock_skew, beyond the error
    UNMEASURED = "unmeasured"  # the host did not answer


class CertVerdict(enum.StrEnum):
    OK = "ok"
    NOT_YET_VALID = "not-yet-valid"  # NotBefore is in the host's future
    EXPIRED = "expired"  # NotAfter is in the host's past
    UNREADABLE = "unreadable"  # a CERTIFICATE block that does not parse


class SyncTool(enum.StrEnum):
    CHRONYC = "chronyc"
    NTPDATE = "ntpdate"
    TIMEDATECTL = "timedatectl"
    NONE = "none"


@dataclass(frozen=True)
class CertFinding:
    host: str
    path: str
    subject: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    host_time: dt.datetime
    verdict: CertVerdict
    problem: str | None  # Go's x509 words, as etcd logs them
    fix: str | None

    @property
    def ok(self) -> bool:
        return self.verdict is CertVerdict.OK

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "path": self.path,
            "subject": self.subject,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "host_time": _iso(self.host_time),
            "verdict": str(self.verdict),
            "problem": self.problem,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class SyncAction:
    """What --sync did on one host: which tool, the command, what it said."""

    host: str
    tool: SyncTool
    argv: tuple[str, ...]
    ok: bool
    output: str
    sentence: str

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "tool": str(self.tool),
            "argv": list(self.argv),
            "ok": self.ok,
            "output": self.output,
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class HostClock:
    host: str
    verdict: ClockVerdict
    sentence: str
    offset_s: float | None  # host - this machine; > 0: the host is ahead
    uncertainty_s: float | None
    host_time: dt.datetime | None
    certs: tuple[CertFinding, ...]
    cert_error: str | None  # the certificates could not be read

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "verdict": str(self.verdict),
            "sentence": self.sentence,
            "offset_s": None if self.offset_s is None else round(self.offset_s, 4),
            "uncertainty_s": None if self.uncertainty_s is None else round(self.uncertainty_s, 4),
            "host_time": _iso(self.host_time),
            "certs": [c.to_json() for c in self.certs],
            "cert_error": self.cert_error,
        }


@dataclass(frozen=True)
class ClockReport:
    cluster: str
    max_skew_s: float
    hosts: tuple[HostClock, ...]
    skew_s: float | None  # the largest pairwise difference between the hosts' clocks
    verdict: str
    duration_s: float = 0.0
    synced: tuple[SyncAction, ...] = ()
    after: ClockReport | None = None  # measured again after --sync
    measured_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def skewed(self) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.verdict is ClockVerdict.SKEWED)

    @property
    def bad_certs(self) -> tuple[CertFinding, ...]:
        return tuple(c for h in self.hosts for c in h.certs if not c.ok)

    @property
    def ok(self) -> bool:
        """Nothing flagged (after the sync, when there was one)."""
        if self.after is not None:
            return self.after.ok
        return all(h.verdict is ClockVerdict.OK and h.cert_error is None for h in self.hosts) and not (
            self.bad_certs
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "cluster": self.cluster,
            "verdict": self.verdict,
            "max_clock_skew_s": self.max_skew_s,
            "skew_s": None if self.skew_s is None else round(self.skew_s, 4),
            "skewed": list(self.skewed),
            "bad_certs": [c.to_json() for c in self.bad_certs],
            "hosts": [h.to_json() for h in self.hosts],
            "measured_at": _iso(self.measured_at),
            "duration_s": round(self.duration_s, 3),
            "synced": [s.to_json() for s in self.synced],
            "after": self.after.to_json() if self.after is not None else None,
        }


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pure -----------------------------------------------------------------------------------------


def cert_dirs(inv: Inventory) -> tuple[str, ...]:
    """Where certificates are looked for on every host: RKE's two dirs and etcd.cert_dir."""
    return tuple(dict.fromkeys((*KUBE_CERT_DIRS, inv.etcd.cert_dir.rstrip("/"))))


def parse_cert_listing(text: str) -> dict[str, bytes]:
    """The `_READ_CERTS` output as {path: PEM CERTIFICATE blocks} (files without one are left out)."""
    out: dict[str, list[str]] = {}
    path: str | None = None
    for line in text.splitlines():
        if line.startswith("==> "):
            path = line[4:].strip()
            out.setdefault(path, [])
        elif path is not None:
            out[path].append(line)
    return {p: ("\n".join(lines) + "\n").encode() for p, lines in out.items() if any(lines)}


def judge_cert(
    host: str, path: str, pem: bytes, host_now: dt.datetime, *, clock: ClockVerdict, offset_s: float | None,
    member_cert: bool,
) -> list[CertFinding]:  # fmt: skip
    """Every certificate in one file against the host's clock, with the fix for what is wrong."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return [
            CertFinding(host, path, "?", None, None, host_now, CertVerdict.UNREADABLE,
                        f"{path}: a CERTIFICATE block that does not parse",
                        "put the certificate back from the RKE state (cluster.rkestate)")
        ]  # fmt: skip
    out = []
    for c in certs:
        problem = validity_problem(c, host_now)
        nb, na = c.not_valid_before_utc, c.not_valid_after_utc
        if problem is None:
            verdict, fix = CertVerdict.OK, None
        elif host_now < nb:
            verdict, fix = CertVerdict.NOT_YET_VALID, _fix(host, path, True, clock, offset_s, member_cert)
        else:
            verdict, fix = CertVerdict.EXPIRED, _fix(host, path, False, clock, offset_s, member_cert)
        subject = c.subject.rfc4514_string()
        out.append(CertFinding(host, path, subject, nb, na, host_now, verdict, problem, fix))
    return out


def _fix(
    host: str, path: str, early: bool, clock: ClockVerdict, offset_s: float | None, member_cert: bool
) -> str:
    """The clock is to blame when it is skewed the way that breaks this certificate (behind for a
    NotBefore in its future, ahead for a NotAfter in its past); else the certificate is."""
    if clock is ClockVerdict.SKEWED and offset_s is not None and (offset_s < 0) == early:
        side = "behind" if offset_s < 0 else "ahead of"
        return (
            f"sync {host}'s clock (it is {abs(offset_s):.1f} s {side} this machine): "
            "`etcd-dr hosts clock --sync`"
        )
    name = posixpath.basename(path)
    if early:
        why = f"{host}'s clock is right: {name} was issued on a machine whose clock was ahead"
    else:
        why = f"{name} has expired"
    if member_cert:
        return (
            f"{why}; reissue it with a validity that starts in the past: `etcd-dr cert renew --host {host}` "
            "(the old one is kept beside it, the member restarted)"
        )
    return f"{why}; reissue it with a validity that starts in the past (`rke cert rotate` on RKE)"


def judge_clock(sample: ClockSample, max_skew_s: float) -> tuple[ClockVerdict, str]:
    """A host is skewed when its offset from this machine exceeds the limit even at the favourable
    end of the measurement's error bar."""
    off, err = sample.offset_s, sample.uncertainty_s
    side = "ahead of" if off >= 0 else "behind"
    what = f"{abs(off):.3f} s {side} this machine (±{err:.3f} s)"
    if abs(off) - err > max_skew_s:
        return ClockVerdict.SKEWED, f"{what}: over check.max_clock_skew {max_skew_s:g} s"
    return ClockVerdict.OK, what


def assess(
    inv: Inventory,
    clocks: Mapping[str, ClockSample | Failed],
    certs: Mapping[str, Mapping[str, bytes] | Failed],
    *,
    now: dt.datetime | None = None,
    duration_s: float = 0.0,
    only: Collection[str] | None = None,
) -> ClockReport:
    """Pure: judge each host's clock (of those in only, when given), and each certificate by its
    host's clock (this machine's, said as such, when the host's could not be measured)."""
    now = now or dt.datetime.now(dt.UTC)
    limit = inv.check.max_clock_skew
    hosts = []
    for h in inv.hosts:
        if only is not None and h.name not in only:
            continue
        s = clocks.get(h.name, Failed("not measured"))
        if isinstance(s, ClockSample):
            verdict, sentence = judge_clock(s, limit)
            host_now, off, err = s.host_time, s.offset_s, s.uncertainty_s
        else:
            verdict, sentence = ClockVerdict.UNMEASURED, f"clock not measured: {s.reason}"
            host_now, off, err = now, None, None
        files = certs.get(h.name, Failed("not read"))
        findings: list[CertFinding] = []
        cert_error = None
        if isinstance(files, Failed):
            cert_error = f"certificates not read: {files.reason}"
        else:
            member = inv.etcd.cert_path(h)
            for path, pem in sorted(files.items()):
                findings += judge_cert(
                    h.name, path, pem, host_now, clock=verdict, offset_s=off, member_cert=path == member
                )
        hosts.append(HostClock(h.name, verdict, sentence, off, err, s.host_time if isinstance(
            s, ClockSample) else None, tuple(findings), cert_error))  # fmt: skip
    rep: SkewReport | None = skew({n: s for n, s in clocks.items() if isinstance(s, ClockSample)})
    return ClockReport(
        cluster=inv.cluster,
        max_skew_s=limit,
        hosts=tuple(hosts),
        skew_s=rep.max_skew_s if rep else None,
        verdict=_verdict(hosts, rep),
        duration_s=duration_s,
        measured_at=now,
    )


def _verdict(hosts: Sequence[HostClock], rep: SkewReport | None) -> str:
    skewed = [h for h in hosts if h.verdict is ClockVerdict.SKEWED]
    bad = [c for h in hosts for c in h.certs if not c.ok]
    unmeasured = [h.host for h in hosts if h.verdict is ClockVerdict.UNMEASURED]
    unread = [h.host for h in hosts if h.cert_error]
    parts = []
    if skewed:
        parts.append("clock skewed on " + ", ".join(f"{h.host} ({h.sentence})" for h in skewed))
    if bad:
        parts.append(
            f"{len(bad)} certificate{'s' if len(bad) != 1 else ''} not valid on their host's clock: "
            + "; ".join(f"{c.host}:{c.path}: {c.problem}" for c in bad[:5])
            + ("; ..." if len(bad) > 5 else "")
        )
    if unmeasured:
        parts.append("not measured: " + ", ".join(unmeasured))
    if unread:
        parts.append("certificates not read: " + ", ".join(unread))
    n_certs = sum(len(h.certs) for h in hosts)
    spread = f", the largest skew between two hosts {rep.max_skew_s:.3f} s" if rep else ""
    if not parts:
        return (
            f"clocks ok: {len(hosts)} hosts within the limit of this machine{spread}; "
            f"{n_certs} certificates valid on their host's clock"
        )
    if skewed and len(skewed) == len(hosts) and len(hosts) > 1:
        parts.append("every host is off by about the same: this machine's clock may be the wrong one")
    return "; ".join(parts)


def sync_candidates(
    tools: Sequence[str], ntp_server: str | None
) -> list[tuple[SyncTool, tuple[str, ...], str]]:
    """Pure: the ways to step a host's clock with what it has, best first, each with why. chronyc
    first (chronyd is RKE hosts' usual daemon; makestep steps at once instead of slewing for hours),
    then ntpdate -u (a one-shot step from an unprivileged port, past a firewall on 123), then
    timedatectl set-ntp true (starts systemd-timesyncd, which steps at its first sync). A tool whose
    daemon is not running fails (`chronyc`: 506 Cannot talk to daemon): the next one is tried."""
    have = set(tools)
    out: list[tuple[SyncTool, tuple[str, ...], str]] = []
    if "chronyc" in have:
        out.append(
            (SyncTool.CHRONYC, ("chronyc", "makestep"), "chronyc makestep: chronyd steps the clock at once")
        )
    if "ntpdate" in have:
        if ntp_server:
            out.append(
                (SyncTool.NTPDATE, ("ntpdate", "-u", ntp_server), f"ntpdate -u {ntp_server}: a one-shot step")
            )
        else:
            out.append((SyncTool.NTPDATE, (), "ntpdate is there but needs a server: pass --ntp-server"))
    if "timedatectl" in have:
        out.append(
            (
                SyncTool.TIMEDATECTL,
                ("timedatectl", "set-ntp", "true"),
                "timedatectl set-ntp true: systemd-timesyncd steps the clock at its first sync",
            )
        )
    return out or [
        (SyncTool.NONE, (), "no chronyc, ntpdate or timedatectl: install chrony and run chronyc makestep")
    ]


def sync_command(tools: Sequence[str], ntp_server: str | None) -> tuple[SyncTool, tuple[str, ...], str]:
    """The first of sync_candidates: what is tried first."""
    return sync_candidates(tools, ntp_server)[0]


# --- talking to hosts ------------------------------------------------------------------------------


def read_cert_files(inv: Inventory, ex: Executor, timeout: float = 10.0) -> dict[str, bytes]:
    r = ex.run(
        ["sh", "-c", _READ_CERTS, "certs", *cert_dirs(inv)],
        timeout=timeout,
        reason="clock: read certificates (CERTIFICATE blocks only)",
    )
    return parse_cert_listing(r.stdout)


def gather(
    inv: Inventory,
    *,
    deadline_s: float = DEADLINE_S,
    executor_factory: Callable[[Host], Executor] | None = None,
    only: Collection[str] | None = None,
) -> tuple[dict[str, ClockSample | Failed], dict[str, dict[str, bytes] | Failed]]:
    """Every host at once (or those named in only): its clock (several samples), then its
    certificates, on one connection."""
    audit = audit_log_for(inv)
    factory = executor_factory or (lambda h: executor_for(inv, h, audit=audit))

    def probe(h: Host) -> tuple[ClockSample, dict[str, bytes] | Failed]:
        ex = factory(h)
        try:
            sample = measure_clock(ex, samples=SAMPLES, timeout=min(10.0, deadline_s))
            try:
                files: dict[str, bytes] | Failed = read_cert_files(inv, ex)
            except CommandError as e:
                files = Failed(str(e))
            return sample, files
        finally:
            ex.close()

    hosts = [h for h in inv.hosts if only is None or h.name in only]
    jobs: dict[Hashable, Callable[[], Any]] = {h.name: (lambda h=h: probe(h)) for h in hosts}
    got = run_all(jobs, deadline_s)
    clocks: dict[str, ClockSample | Failed] = {}
    certs: dict[str, dict[str, bytes] | Failed] = {}
    for h in hosts:
        r = got[h.name]
        if isinstance(r, Failed):
            clocks[h.name] = certs[h.name] = r
        else:
            clocks[h.name], certs[h.name] = r
    return clocks, certs


def sync_host(
    inv: Inventory, host: str, *, ntp_server: str | None = None, executor: Executor | None = None
) -> SyncAction:
    """Step one host's clock: the candidates in order until one succeeds (sync_candidates decides).
    Every command is audited by the executor."""
    ex = executor or executor_for(inv, host)
    try:
        tools = ex.run(["sh", "-c", _FIND_TOOLS], reason="clock: which sync tool is there").stdout.split()
        tried: list[str] = []
        last = SyncAction(host, SyncTool.NONE, (), False, "", f"{host}: not synced")
        for tool, argv, why in sync_candidates(tools, ntp_server):
            if not argv:
                tried.append(why)
                last = SyncAction(host, tool, (), False, "", f"{host}: not synced: {'; '.join(tried)}")
                continue
            r = ex.run(list(argv), check=False, timeout=60, reason=f"clock: step {host}'s clock ({why})")
            out = (r.stdout + r.stderr).strip()[-300:]
            before = f" (after: {'; '.join(tried)})" if tried else ""
            said = f"{host}: {' '.join(argv)} {'ok' if r.ok else f'failed (exit {r.rc})'} ({why}){before}"
            last = SyncAction(host, tool, argv, r.ok, out, said)
            if r.ok:
                return last
            tried.append(f"{' '.join(argv)} failed (exit {r.rc}: {out[-80:]})")
        return last
    finally:
        if executor is None:
            ex.close()


def clock_report(
    inv: Inventory,
    *,
    sync: bool = False,
    ntp_server: str | None = None,
    deadline_s: float = DEADLINE_S,
    executor_factory: Callable[[Host], Executor] | None = None,
    only: Collection[str] | None = None,
) -> ClockReport:
    """Measure and judge; with sync, step the skewed hosts' clocks and measure again (`after`).
    With only, just those hosts are measured (the others are reported as not measured)."""
    t0 = time.monotonic()
    clocks, certs = gather(inv, deadline_s=deadline_s, executor_factory=executor_factory, only=only)
    rep = assess(inv, clocks, certs, duration_s=time.monotonic() - t0, only=only)
    if not sync or not rep.skewed:
        return rep
    actions = []
    for host in rep.skewed:
        ex = executor_factory(inv.host(host)) if executor_factory else None
        try:
            actions.append(sync_host(inv, host, ntp_server=ntp_server, executor=ex))
        finally:
            if ex is not None:
                ex.close()
    t1 = time.monotonic()
    clocks, certs = gather(inv, deadline_s=deadline_s, executor_factory=executor_factory, only=only)
    after = assess(inv, clocks, certs, duration_s=time.monotonic() - t1, only=only)
    return replace(rep, synced=tuple(actions), after=after, duration_s=time.monotonic() - t0)
