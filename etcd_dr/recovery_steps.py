"""Carrying a force-new-cluster recovery plan out: one handler per step action of
etcd_dr.recovery's FORCE_NEW_CLUSTER path, for both runtimes (Docker as RKE runs etcd, and a plain
process), over SSH.

Every `done()` is read-only and checks the step's postcondition against the hosts as they are now,
including what later steps of the same plan leave behind, so that a re-run of the same plan after a
crash at any point skips what is done: once the forced member exists (or was renamed aside), the
member is never forced again. Data dirs are copied, never deleted; old members are renamed and kept
with restart=no. A member is started as a copy of the retired one (`docker inspect`: image,
entrypoint, mounts, network, environment; its etcd arguments) with only the cluster flags changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from etcd_dr.audit import AuditLog
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.executor import Executor, executor_for
from etcd_dr.fencing import gather
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, Step, StepHandler
from etcd_dr.recovery import FORCE_FLAG
from etcd_dr.runtime import DockerRuntime, ProcessRuntime, runtime_for

Say = Callable[[str], None]
POLL_S = 0.2
KILL_WAIT_S = 15.0
STOP_TIMEOUT_S = 10.0


class RecoveryStepError(EtcdDrError):
    """A recovery step could not be carried out; the message says what to do."""


def recovery_args(old: Sequence[str], initial_cluster: str, extra_flags: Sequence[str] = ()) -> list[str]:
    """etcd's arguments for the recovered member: the old member's, with `--initial-cluster` set to
    the member alone, `--initial-cluster-state=new`, no `--force-new-cluster`, then extra_flags.
    Pure. Accepts both `--flag=value` (RKE) and `--flag value`."""
    out: list[str] = []
    replaced = {"--initial-cluster": f"--initial-cluster={initial_cluster}", "--initial-cluster-state": None}
    seen: set[str] = set()
    skip_next = False
    for a in old:
        if skip_next:
            skip_next = False
            continue
        name = a.split("=", 1)[0]
        if name == FORCE_FLAG:
            continue
        if name in replaced:
            seen.add(name)
            skip_next = "=" not in a
            if replaced[name] is not None:
                out.append(str(replaced[name]))
            else:
                out.append("--initial-cluster-state=new")
            continue
        out.append(a)
    if "--initial-cluster" not in seen:
        out.append(f"--initial-cluster={initial_cluster}")
    if "--initial-cluster-state" not in seen:
        out.append("--initial-cluster-state=new")
    return [*out, *extra_flags]


@dataclass
class Ctx:
    """What the handlers share: the plan (for what later steps leave behind), one SSH connection per
    host, one etcd client per endpoint, and what the verification found."""

    inv: Inventory
    plan: Plan
    audit: AuditLog | None
    say: Say
    first_write_at: float | None = None  # wall clock of the first accepted write (the probe)
    keys: int | None = None
    revision: int | None = None
    _executors: dict[str, Executor] = field(default_factory=dict)
    _clients: dict[str, EtcdClient] = field(default_factory=dict)

    def executor(self, host: str) -> Executor:
        if host not in self._executors:
            self._executors[host] = executor_for(self.inv, host, audit=self.audit)
        return self._executors[host]

    def runtime(self, host: str, name: str) -> DockerRuntime | ProcessRuntime:
        """The member runtime on host under container (or unit) name `name`."""
        rt = runtime_for(self.inv, self.executor(host), host=self.inv.host(host))
        if isinstance(rt, DockerRuntime):
            return DockerRuntime(rt.ex, name, rt.image, docker=rt.docker, binds=rt.binds)
        return ProcessRuntime(
            rt.ex, rt.binary, name, unit_dir=rt.unit_dir, run_dir=rt.run_dir, log_dir=rt.log_dir
        )

    def client(self, endpoint: str) -> EtcdClient:
        if endpoint not in self._clients:
            e = self.inv.etcd
            self._clients[endpoint] = EtcdClient(
                [endpoint],
                ca_cert=e.client.ca_cert,
                cert=e.client.cert,
                key=e.client.key,
                dial_timeout=min(e.dial_timeout, 2.0),
                request_timeout=min(e.request_timeout, 2.0),
            )
        return self._clients[endpoint]

    def later(self, action: str, host: str | None) -> Step | None:
        """The plan's step with this action on this host (the first one)."""
        return next((s for s in self.plan.steps if s.action == action and s.host == host), None)

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        for c in self._clients.values():
            c.close()
        self._executors.clear()
        self._clients.clear()


def _p(step: Step, key: str) -> str:
    return str(step.params[key])


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RecoveryStepError(f"{what}: not true after {timeout:.0f} s")
        time.sleep(POLL_S)


class FenceCheck:
    """Fresh evidence that every other voter can no longer take part in the old cluster."""

    def __init__(self, c: Ctx) -> None:
        self.c = c
        self.problems: list[str] = []

    def done(self, step: Step) -> bool:
        hosts = [str(h) for h in step.params["hosts"]]  # type: ignore[attr-defined]
        ev = gather(self.c.inv, hosts)
        self.problems = [f"{h} is not fenced ({e.how})" for h, e in ev.items() if not e.fenced]
        return not self.problems

    def run(self, step: Step) -> None:
        raise RecoveryStepError(
            f"{'; '.join(self.problems)}; fence it, then run `etcd-dr recover` again (this plan resumes)"
        )


class EtcdKill:
    """Done once the member's etcd is not running, or the plan already retired it."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def _retired(self, step: Step) -> bool:
        retire = self.c.later("retire-member", step.host)
        return retire is not None and self.c.runtime(str(step.host), _p(retire, "new_name")).exists()

    def done(self, step: Step) -> bool:
        return self._retired(step) or not self.c.runtime(str(step.host), _p(step, "name")).is_running()

    def run(self, step: Step) -> None:
        # a kill, not a stop: a leader whose peers are gone stalls the whole stop timeout (NOTES)
        rt = self.c.runtime(str(step.host), _p(step, "name"))
        rt.kill()
        _wait(lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {step.host} stopped")


_COPY = 'rm -rf -- "$2.part" && cp -a -- "$1" "$2.part" && sync && mv -- "$2.part" "$2"'


class CopyDir:
    """A complete copy appears at dst atomically (copied to dst.part, our own, then renamed)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        return self.c.executor(str(step.host)).run(["test", "-d", _p(step, "dst")], check=False).ok

    def run(self, step: Step) -> None:
        ex = self.c.executor(str(step.host))
        src, dst = _p(step, "src"), _p(step, "dst")
        if not ex.run(["test", "-d", f"{src}/member"], check=False).ok:
            raise RecoveryStepError(f"{step.host}: {src} holds no etcd data (no member dir); nothing copied")
        kill = self.c.later("etcd-kill", step.host)
        if kill is not None and self.c.runtime(str(step.host), _p(kill, "name")).is_running():
            raise RecoveryStepError(f"{step.host}: etcd runs again: its data dir is not quiet, not copied")
        ex.run(["sh", "-c", _COPY, "copy", src, dst], timeout=600, reason=f"back up {src} to {dst}")


class RetireMember:
    """Done when the renamed old member exists and will not restart by itself."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        old = self.c.runtime(str(step.host), _p(step, "new_name"))
        return old.exists() and not old.restarts()

    def run(self, step: Step) -> None:
        host = str(step.host)
        old = self.c.runtime(host, _p(step, "new_name"))
        if not old.exists():
            cur = self.c.runtime(host, _p(step, "name"))
            if not cur.exists():
                what = f"no {_p(step, 'name')} to retire and no {_p(step, 'new_name')}"
                raise RecoveryStepError(f"{host}: {what}")
            old = cur.rename(_p(step, "new_name"))
        old.set_restart(False)


class EtcdRun:
    """Starts the member as a copy of the retired one. The forced start is done once the forced
    member exists (running or renamed aside) or the member runs without the flag in a one-member
    cluster; the plain start is done when the member runs with exactly the expected arguments and
    restart policy."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def expected(self, step: Step) -> list[str]:
        host = str(step.host)
        tmpl = self.c.runtime(host, _p(step, "image_from"))
        old = tmpl.args() if tmpl.exists() else [str(a) for a in step.params["args"]]  # type: ignore[attr-defined]
        extra = [str(a) for a in step.params["extra_flags"]]  # type: ignore[attr-defined]
        return recovery_args(old, _p(step, "initial_cluster"), extra)

    def _forced(self, step: Step) -> bool:
        return FORCE_FLAG in [str(a) for a in step.params["extra_flags"]]  # type: ignore[attr-defined]

    def _one_member(self, step: Step) -> bool:
        try:
            ms = self.c.client(_p(step, "endpoint")).member_list(
                linearizable=False, endpoint=_p(step, "endpoint"), timeout=2.0
            )
        except EtcdDrError:
            return False
        return len(ms) == 1

    def done(self, step: Step) -> bool:
        host = str(step.host)
        rt = self.c.runtime(host, _p(step, "name"))
        if self._forced(step):
            renamed = [
                str(s.params["forced_name"])
                for s in self.c.plan.steps
                if s.host == host and s.action == "etcd-run" and "forced_name" in s.params
            ]
            if any(self.c.runtime(host, n).exists() for n in renamed):
                return True
            if not rt.exists():
                return False
            if FORCE_FLAG in rt.args():
                return True  # the forced member exists: never start another
            return rt.is_running() and self._one_member(step)
        return (
            rt.is_running()
            and rt.args() == self.expected(step)
            and rt.restarts() == (_p(step, "restart") == "always")
        )

    def run(self, step: Step) -> None:
        host = str(step.host)
        name = _p(step, "name")
        rt = self.c.runtime(host, name)
        if rt.exists():
            if self._forced(step) or FORCE_FLAG not in rt.args():
                raise RecoveryStepError(
                    f"{host}: a {name} exists that this plan did not expect ({' '.join(rt.args()[:1])}...); "
                    "nothing started"
                )
            # the forced member: stopped (one member, no leadership to hand over), kept aside, never
            # restarted by itself
            rt.stop(STOP_TIMEOUT_S)
            _wait(lambda: not rt.is_running(), KILL_WAIT_S, f"forced etcd on {host} stopped")
            rt.rename(_p(step, "forced_name")).set_restart(False)
        args = self.expected(step)
        rt.start_like(_p(step, "image_from"), args, restart_always=_p(step, "restart") == "always")


class WaitHealthy:
    """The member answers Status as the leader of a cluster of exactly `members` members."""

    def __init__(self, c: Ctx) -> None:
        self.c = c
        self.last = "not asked yet"

    def done(self, step: Step) -> bool:
        ep = _p(step, "endpoint")
        try:
            cl = self.c.client(ep)
            st = cl.status(ep, timeout=1.0)
            if not st.is_leader:
                self.last = "answers, but does not lead (yet)"
                return False
            n = len(cl.member_list(linearizable=False, endpoint=ep, timeout=1.0))
        except EtcdDrError as e:
            self.last = str(e)
            return False
        self.last = f"leads, {n} members"
        return n == int(_p(step, "members"))

    def run(self, step: Step) -> None:
        try:
            _wait(lambda: self.done(step), float(_p(step, "timeout_s")), f"{step.host} leads alone")
        except RecoveryStepError as e:
            raise RecoveryStepError(f"{e} (last: {self.last}); see the member's log on {step.host}") from e


class VerifyCluster:
    """One member, a probe write accepted (linearizable read of it), revision kept; keys counted."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        ep = _p(step, "endpoint")
        cl = self.c.client(ep)
        try:
            members = cl.member_list(linearizable=True, endpoint=ep, timeout=2.0)
            probe = cl.range(_p(step, "probe_key"), timeout=2.0)
            count = cl.range(b"\0", b"\0", count_only=True, timeout=2.0)
        except EtcdDrError:
            return False
        self.c.keys, self.c.revision = count.count, count.header.revision
        return (
            len(members) == int(_p(step, "members"))
            and probe.count == 1
            and count.header.revision >= int(_p(step, "min_revision"))
        )

    def run(self, step: Step) -> None:
        ep = _p(step, "endpoint")
        value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.c.client(ep).put(_p(step, "probe_key"), f"recovered {value}", timeout=5.0)
        self.c.first_write_at = time.time()


def handlers(c: Ctx) -> dict[str, StepHandler]:
    return {
        "fence-check": FenceCheck(c),
        "etcd-kill": EtcdKill(c),
        "copy-dir": CopyDir(c),
        "retire-member": RetireMember(c),
        "etcd-run": EtcdRun(c),
        "wait-healthy": WaitHealthy(c),
        "verify-cluster": VerifyCluster(c),
    }


__all__ = ["Ctx", "RecoveryStepError", "handlers", "recovery_args"]
