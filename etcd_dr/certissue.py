"""`etcd-dr cert issue`: a key and certificate for an etcd member, signed by the cluster CA, written
to the host at RKE's paths. The source incident did this by hand with openssl and then fought a
host whose clock was behind; this refuses such a certificate before it is written.

    ca = load_ca(inv)                                   # kube-ca over SSH from the inventory's `ca:`
    res = issue_member_cert(inv, "node1", ca)           # or ca from a Prefect Secret block
    print(res.reason)   # "issued kube-etcd-10-0-0-21.pem for node1 (SANs ...), valid ... on node1's clock"

Everything is decided before anything is written: the CA key matches the CA certificate; the new
certificate verifies against the CA and its key matches it; it is valid on the TARGET host's clock
(read over SSH: a certificate valid here but not yet there is the incident's
`x509: certificate has expired or is not yet valid`); the host's kube-ca.pem is this CA or absent.
A valid pair already on the host for the same SANs, signed by this CA, is kept. Key material is held
in memory only, registered for redaction, and never logged, audited or put into a message.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from etcd_dr.audit import register_secret
from etcd_dr.certs import CertKeyPair, check_ca, issue_cert, member_pair_problem, validity_problem
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.executor import Executor, executor_for
from etcd_dr.inventory import Host, Inventory
from etcd_dr.stepctx import HostFS, HostLook

_TS = "%Y%m%dT%H%M%SZ"


class CertRefused(EtcdDrError):
    """A certificate that the target host would not accept (clock), or a host whose CA differs.
    Nothing was written."""


class CertOutcome(enum.StrEnum):
    ISSUED = "issued"  # a new pair was written (an unusable old one moved aside)
    KEPT = "kept"  # a valid pair for these SANs, signed by this CA, was already there


@dataclass(frozen=True)
class HostClock:
    host: str
    now: dt.datetime  # the host's UTC time (midpoint-corrected for the SSH round trip)
    skew_s: float  # host clock minus this machine's clock; negative: the host is behind
    rtt_s: float


@dataclass(frozen=True)
class CertIssueResult:
    host: str
    outcome: CertOutcome
    cert_path: str
    key_path: str
    ca_path: str
    ca_installed: bool  # kube-ca.pem was missing on the host and was written
    ips: tuple[str, ...]
    dns: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str
    host_clock: HostClock
    moved_aside: tuple[str, ...]  # old files renamed to .bak-<ts> before the new ones were written
    reason: str
    duration_s: float

    def to_json(self) -> dict:
        return {
            "host": self.host,
            "outcome": str(self.outcome),
            "cert": self.cert_path,
            "key": self.key_path,
            "ca": self.ca_path,
            "ca_installed": self.ca_installed,
            "ips": list(self.ips),
            "dns": list(self.dns),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "serial": self.serial,
            "host_time": self.host_clock.now.isoformat(),
            "host_clock_skew_s": round(self.host_clock.skew_s, 3),
            "moved_aside": list(self.moved_aside),
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
        }


def member_sans(host: Host, ips: Sequence[str] = (), dns: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """A member's SANs as RKE gives them: its address, its name, and loopback (etcd also listens on
    127.0.0.1 for RKE's health checks), plus what the caller adds. Duplicates dropped, order kept."""
    out_ips, out_dns = [], [host.name.lower()]
    try:
        out_ips.append(ipaddress.ip_address(host.address).compressed)
    except ValueError:
        out_dns.append(host.address.lower())
    out_ips.append("127.0.0.1")
    out_dns.append("localhost")
    for ip in ips:
        try:
            out_ips.append(ipaddress.ip_address(ip).compressed)
        except ValueError:
            raise InputError(
                f"--ip {ip!r} is not an IP address; give e.g. 10.0.0.21 (names go to --dns)"
            ) from None
    out_dns += [d.lower().rstrip(".") for d in dns]
    return list(dict.fromkeys(out_ips)), list(dict.fromkeys(out_dns))


def read_host_clock(ex: Executor) -> HostClock:
    """The host's UTC time, read over the executor; the round trip's midpoint is taken as 'now'."""
    return _clock(ex.host, HostFS(ex).look(clock=True, reason="read the host clock"))


def _clock(host: str, look: HostLook) -> HostClock:
    assert look.clock is not None and look.skew_s is not None  # asked for
    return HostClock(host, dt.datetime.fromtimestamp(look.clock, dt.UTC), look.skew_s, look.rtt_s)


def load_ca(inv: Inventory, *, executor: Executor | None = None) -> CertKeyPair:
    """The cluster CA (certificate and key) read over SSH from the inventory's `ca:` host (default:
    the first voter) at `ca.cert`/`ca.key`. The key is registered for redaction at once."""
    host = inv.ca_host()
    cert_path, key_path = inv.ca_cert_path(), inv.ca_key_path()
    ex = executor or executor_for(inv, host)
    try:
        cert, key = HostFS(ex).read_optional(cert_path, key_path, reason="read kube-ca and its key")
    finally:
        if executor is None:
            ex.close()
    missing = [p for p, v in ((cert_path, cert), (key_path, key)) if v is None]
    if missing:
        raise InputError(
            f"ca: {host.name} has no {' and no '.join(missing)}; set ca.host/ca.cert/ca.key in the inventory "
            "to where kube-ca and its key are (RKE keeps the key in cluster.rkestate: copy it to a master "
            "with mode 0600, or pass the CA from a Prefect Secret block)"
        )
    assert cert is not None and key is not None
    register_secret(key)
    pair = CertKeyPair(cert, key)
    check_ca(pair, f"ca ({host.name}:{key_path})")
    return pair


def load_ca_cert(inv: Inventory, *, executor: Executor | None = None) -> bytes:
    """Only the CA certificate (no key) from the inventory's `ca:` host: enough to check a pair."""
    host = inv.ca_host()
    ex = executor or executor_for(inv, host)
    try:
        (pem,) = HostFS(ex).read_optional(inv.ca_cert_path(), reason="read kube-ca")
    finally:
        if executor is None:
            ex.close()
    if pem is None:
        raise InputError(f"ca: {host.name} has no {inv.ca_cert_path()}; set ca.host/ca.cert in the inventory")
    return pem


def existing_pair_problem(
    inv: Inventory,
    host: Host,
    ca_cert_pem: bytes,
    ex: Executor,
    now: dt.datetime,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
) -> str | None:
    """Why host has no usable member certificate and key (missing, wrong SANs, another CA, not valid
    on its clock `now`...), or None when it has one. Read-only, one round trip."""
    e = inv.etcd
    cert, key = HostFS(ex).read_optional(e.cert_path(host), e.key_path(host), reason="read the member pair")
    return _pair_problem(inv, host, ca_cert_pem, cert, key, now, ips, dns)


@dataclass(frozen=True)
class PairLook:
    """One look at a host's member pair: why it is not usable (None: it is), on the host's clock."""

    problem: str | None
    clock: HostClock
    tests: tuple[bool, ...]  # the `test`s asked in the same round trip, in order


def member_cert_problem(
    inv: Inventory,
    host: Host,
    ca_cert_pem: bytes,
    ex: Executor,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    tests: Sequence[tuple[str, str]] = (),
) -> PairLook:
    """existing_pair_problem on the host's own clock, that clock, and any `test`s a caller needs
    from the host besides: one round trip for all of it."""
    e = inv.etcd
    look = HostFS(ex).look(
        tests=tests,
        files=(e.cert_path(host), e.key_path(host)),
        clock=True,
        reason="read the member pair and the clock",
    )
    clock = _clock(ex.host, look)
    cert, key = look.files
    return PairLook(_pair_problem(inv, host, ca_cert_pem, cert, key, clock.now, ips, dns), clock, look.tests)


def _pair_problem(
    inv: Inventory,
    host: Host,
    ca_cert_pem: bytes,
    cert: bytes | None,
    key: bytes | None,
    now: dt.datetime,
    ips: Sequence[str],
    dns: Sequence[str],
) -> str | None:
    e = inv.etcd
    if key is not None:
        register_secret(key)
    if cert is None or key is None:
        return (
            f"no {posixpath.basename(e.cert_path(host) if cert is None else e.key_path(host))} on {host.name}"
        )
    want_ips, want_dns = member_sans(host, ips, dns)
    why = member_pair_problem(
        CertKeyPair(cert, key),
        x509.load_pem_x509_certificate(ca_cert_pem),
        ips=want_ips,
        dns=want_dns,
        now=now,
    )
    return f"the one on {host.name} is not usable: {why}" if why else None


def issue_member_cert(
    inv: Inventory,
    host: Host | str,
    ca: CertKeyPair,
    *,
    executor: Executor | None = None,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    days: int = 3650,
    force: bool = False,
) -> CertIssueResult:
    """Make sure `host` has a member certificate and key (RKE's names, in etcd.cert_dir) signed by
    `ca` for its SANs, and the CA as kube-ca.pem. Raises InputError (bad CA or SAN) or CertRefused
    (clock, another CA on the host) before writing anything. force: reissue even when a valid pair is
    there (`cert renew`; the old pair is moved aside all the same)."""
    t0 = time.monotonic()
    h = inv.host(host) if isinstance(host, str) else host
    register_secret(ca.key_pem)
    check_ca(ca)
    ca_cert = ca.certificate()
    want_ips, want_dns = member_sans(h, ips, dns)
    e = inv.etcd
    cert_path, key_path, ca_path = e.cert_path(h), e.key_path(h), e.ca_path()
    ex = executor or executor_for(inv, h)
    fs = HostFS(ex)
    try:
        # what is there, and the host's clock: one round trip
        look = fs.look(files=(ca_path, cert_path, key_path), clock=True, reason="read the member pair")
        clock = _clock(ex.host, look)
        host_ca, old_cert, old_key = look.files
        # the CA itself must be valid on the host's clock too, or every handshake fails
        ca_problem = validity_problem(ca_cert, clock.now)
        if ca_problem:
            raise CertRefused(
                f"{h.name}: kube-ca is not valid on {h.name}'s clock: {ca_problem}; {_clock_fix(clock)}"
            )
        if host_ca is not None and _cert_der(host_ca) != _cert_der(ca.cert_pem):
            raise CertRefused(
                f"{h.name}:{ca_path} is another CA than the one given (inventory ca:); a member's peers "
                "would refuse its certificate: find out which kube-ca this cluster really uses"
            )
        if old_key is not None:
            register_secret(old_key)
        if old_cert is not None and old_key is not None:
            old = CertKeyPair(old_cert, old_key)
            why_not = member_pair_problem(old, ca_cert, ips=want_ips, dns=want_dns, now=clock.now)
            if why_not is None and not force:
                ca_installed = _install_ca(fs, ca, ca_path, host_ca)
                c = old.certificate()
                return _result(
                    h, CertOutcome.KEPT, cert_path, key_path, ca_path, ca_installed, want_ips, want_dns,
                    c, clock, (),
                    f"kept {posixpath.basename(cert_path)} on {h.name}: a valid certificate for its SANs "
                    f"signed by kube-ca is already there (valid until {c.not_valid_after_utc:%Y-%m-%d})",
                    t0,
                )  # fmt: skip
            replaced = f" (the old one: {why_not or 'valid, renewed on request'})"
        elif old_cert is not None or old_key is not None:
            replaced = " (only half of the old pair was there)"
        else:
            replaced = ""

        pair = issue_cert(
            ca, f"kube-etcd-{h.address_dashed}", ips=want_ips, dns=want_dns, days=days, not_before=not_before
        )
        register_secret(pair.key_pem)
        problem = member_pair_problem(pair, ca_cert, ips=want_ips, dns=want_dns, now=clock.now)
        if problem:
            fix = _clock_fix(clock) if problem.startswith("x509:") else "this is a bug: report it"
            raise CertRefused(
                f"{h.name}: refused to install a certificate {h.name} would reject: {problem}; {fix}"
            )
        # Nothing was written so far. Old files are moved aside (never deleted), key first, 0600.
        ca_installed = _install_ca(fs, ca, ca_path, host_ca)
        ts = dt.datetime.now(dt.UTC).strftime(_TS)
        moved = tuple(
            str(fs.move_aside(path, f"bak-{ts}", reason="move an unusable old member certificate aside"))
            for path, data in ((key_path, old_key), (cert_path, old_cert))
            if data is not None
        )
        ex.put(pair.key_pem, key_path, mode=0o600, reason=f"install etcd member key for {h.name}")
        ex.put(pair.cert_pem, cert_path, mode=0o644, reason=f"install etcd member certificate for {h.name}")
        mode = fs.mode(key_path)
        if mode != 0o600:
            shown = f"{mode:o}" if mode is not None else "none"
            raise CertRefused(f"{h.name}:{key_path} has mode {shown} after writing, not 600: check the host")
        c = pair.certificate()
        return _result(
            h, CertOutcome.ISSUED, cert_path, key_path, ca_path, ca_installed, want_ips, want_dns, c, clock,
            moved,
            f"issued {posixpath.basename(cert_path)} for {h.name}{replaced}: SANs "
            f"{', '.join(want_ips + want_dns)}, serverAuth+clientAuth, valid on {h.name}'s clock "
            f"({clock.now:%Y-%m-%dT%H:%M:%SZ}) from {c.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
            f"to {c.not_valid_after_utc:%Y-%m-%d}",
            t0,
        )  # fmt: skip
    finally:
        if executor is None:
            ex.close()


def _clock_fix(clock: HostClock) -> str:
    when = f"{clock.now:%Y-%m-%dT%H:%M:%SZ}"
    if abs(clock.skew_s) >= 1.0:
        side = "behind" if clock.skew_s < 0 else "ahead of"
        return (
            f"fix: sync {clock.host}'s clock (it is {abs(clock.skew_s):.1f} s {side} this machine: "
            f"chronyc makestep or ntpdate), or issue with --not-before earlier than {when}"
        )
    return f"fix: issue with a validity window that contains {clock.host}'s time {when} (--not-before)"


def _cert_der(pem: bytes) -> bytes | None:
    from cryptography.hazmat.primitives import serialization

    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return None


def _install_ca(fs: HostFS, ca: CertKeyPair, ca_path: str, present: bytes | None) -> bool:
    if present is not None:
        return False
    fs.write_atomic(ca.cert_pem, ca_path, mode=0o644, dir_mode=0o755, reason="install kube-ca.pem")
    return True


def _result(
    h: Host,
    outcome: CertOutcome,
    cert_path: str,
    key_path: str,
    ca_path: str,
    ca_installed: bool,
    ips: list[str],
    dns: list[str],
    cert: x509.Certificate,
    clock: HostClock,
    moved: tuple[str, ...],
    reason: str,
    t0: float,
) -> CertIssueResult:
    return CertIssueResult(
        h.name, outcome, cert_path, key_path, ca_path, ca_installed, tuple(ips), tuple(dns),
        cert.not_valid_before_utc, cert.not_valid_after_utc, f"{cert.serial_number:x}", clock, moved,
        reason, time.monotonic() - t0,
    )  # fmt: skip
