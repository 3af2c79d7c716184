"""Cert renew's steps: the handlers of etcd_dr.certrenew.plan's actions on the shared StepContext."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from etcd_dr.certissue import issue_member_cert, load_ca, read_host_clock
from etcd_dr.certrenew.plan import BACKDATE, RenewAction, RenewParams
from etcd_dr.certs import CertKeyPair, member_pair_problem
from etcd_dr.errors import EtcdDrError
from etcd_dr.executor import Executor
from etcd_dr.plans import Params, Step, StepHandler
from etcd_dr.runtime import DockerRuntime, ProcessRuntime, runtime_for
from etcd_dr.stepctx import StepContext, wait

_PROC_START = (
    "bt=$(awk '/^btime/{print $2}' /proc/stat); st=$(sed 's/.*) //' /proc/$1/stat | awk '{print $20}'); "
    "echo $((bt + st / $(getconf CLK_TCK)))"
)


class RenewStepError(EtcdDrError):
    """A cert renew step could not be carried out."""


def serves_file_since(ex: Executor, rt: DockerRuntime | ProcessRuntime, path: str) -> bool:
    """The member runs and started after `path` was last written: it serves that file (etcd reads
    its certificate at start)."""
    if not rt.is_running():
        return False
    mtime = float(ex.run(["stat", "-c", "%Y", path]).stdout.strip())
    if isinstance(rt, DockerRuntime):
        started = ex.run([rt.docker, "inspect", "-f", "{{.State.StartedAt}}", rt.container]).stdout.strip()
        base = started.rstrip("Z").partition(".")[0]
        return dt.datetime.fromisoformat(base).replace(tzinfo=dt.UTC).timestamp() >= mtime - 1
    pid = rt.pid()
    if pid is None:
        return False
    # the process's start: boot time + its start in clock ticks (/proc/PID's own mtime is when the
    # kernel first showed the entry, not when the process started)
    r = ex.run(["sh", "-c", _PROC_START, "start", str(pid)], reason="when did etcd start")
    return float(r.stdout.strip()) >= mtime - 1


def restart_member(rt: DockerRuntime | ProcessRuntime) -> None:
    if rt.is_running():
        rt.stop(timeout=10)
    rt.restart()


@dataclass
class RenewCtx(StepContext):
    """StepContext plus kube-ca, read once per run (its key registered for redaction by load_ca)."""

    _ca: CertKeyPair | None = None

    def ca(self) -> CertKeyPair:
        if self._ca is None:
            self._ca = load_ca(self.inv)
        return self._ca

    def runtime(self, host: str) -> DockerRuntime | ProcessRuntime:
        return runtime_for(self.inv, self.executor(host), host=self.inv.host(host))


def _host(step: Step) -> str:
    if step.host is None:
        raise RenewStepError(f"step {step.id}: no host; the plan is malformed, plan again")
    return step.host


class RenewCert:
    def __init__(self, c: RenewCtx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        p, host = step.typed(RenewParams), _host(step)
        ex = self.c.executor(host)
        if not self.c.fs(host).is_file(p.cert) or not self.c.fs(host).is_file(p.key):
            return False
        cert = x509.load_pem_x509_certificate(ex.get(p.cert))
        if f"{cert.serial_number:x}" == p.old_serial:
            return False  # still the certificate the plan was made to replace
        pair = CertKeyPair(ex.get(p.cert), ex.get(p.key))
        now = read_host_clock(ex).now
        return member_pair_problem(pair, self.c.ca().certificate(), ips=p.ips, dns=p.dns, now=now) is None

    def run(self, step: Step) -> str:
        p, host = step.typed(RenewParams), _host(step)
        ex = self.c.executor(host)
        # a few minutes back on whichever clock is behind: valid at once on the host and here
        nb = min(dt.datetime.now(dt.UTC), read_host_clock(ex).now) - BACKDATE
        res = issue_member_cert(
            self.c.inv, host, self.c.ca(), executor=ex, ips=p.ips, dns=p.dns, not_before=nb, force=True
        )
        return res.reason


class RestartMember:
    def __init__(self, c: RenewCtx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        host = _host(step)
        return serves_file_since(self.c.executor(host), self.c.runtime(host), step.typed(RenewParams).cert)

    def run(self, step: Step) -> None:
        restart_member(self.c.runtime(_host(step)))


class WaitMember:
    def __init__(self, c: RenewCtx) -> None:
        self.c = c

    def _led(self, p: RenewParams) -> bool:
        try:
            return self.c.client(p.endpoint).status(p.endpoint, timeout=2.0).leader != 0
        except EtcdDrError:
            return False

    def done(self, step: Step) -> bool:
        return self._led(step.typed(RenewParams))

    def run(self, step: Step) -> None:
        p = step.typed(RenewParams)
        what = f"{step.host} answers with a leader"
        wait(lambda: self._led(p), float(p.timeout_s), what, error=RenewStepError, poll=0.5)


VOCABULARY: dict[RenewAction, tuple[type[Params], Callable[[RenewCtx], StepHandler]]] = {
    RenewAction.RENEW_CERT: (RenewParams, RenewCert),
    RenewAction.RESTART_MEMBER: (RenewParams, RestartMember),
    RenewAction.WAIT_MEMBER: (RenewParams, WaitMember),
}


def handlers(c: RenewCtx) -> dict[str, StepHandler]:
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}
