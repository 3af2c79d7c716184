"""Carrying a recovery plan out: one handler per step action of etcd_dr.recovery's paths (voter
restore, force-new-cluster, learner restore, snapshot restore), for both runtimes (Docker as RKE
runs etcd, and a plain process), over SSH.

Every `done()` is read-only and checks the step's postcondition against the hosts as they are now,
including what later steps of the same plan leave behind, so that a re-run of the same plan after a
crash at any point skips what is done: once the forced member exists (or was renamed aside), the
member is never forced again. Data dirs are copied, never deleted; old members are renamed and kept
with restart=no. A member is started as a copy of the retired one (`docker inspect`: image,
entrypoint, mounts, network, environment; its etcd arguments) with only the cluster flags changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from etcd_dr.audit import AuditLog
from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EndpointStatus, EtcdClient
from etcd_dr.executor import Executor, executor_for
from etcd_dr.fencing import asked_on_host, gather, probe
from etcd_dr.inventory import Inventory
from etcd_dr.plans import Plan, Step, StepHandler
from etcd_dr.recovery import FORCE_FLAG, FenceEvidence
from etcd_dr.runtime import DockerRuntime, ProcessRuntime, runtime_for
from etcd_dr.state import client_for

Say = Callable[[str], None]
POLL_S = 0.2
KILL_WAIT_S = 15.0
STOP_TIMEOUT_S = 10.0
# fencing evidence this young (gathered for the plan, no approval wait in between) is not gathered
# again: a dead host costs a probe timeout each time
FRESH_EVIDENCE_S = 10.0


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
    evidence: Mapping[str, FenceEvidence] = field(default_factory=dict)  # gathered while planning
    evidence_at: float | None = None  # time.monotonic() when it was gathered
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
            self._clients[endpoint] = client_for(
                self.inv,
                [endpoint],
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

    def done(self, step: Step) -> bool | str:
        hosts = [str(h) for h in step.params["hosts"]]  # type: ignore[attr-defined]
        at = self.c.evidence_at
        age = time.monotonic() - at if at is not None else None
        if (
            age is not None
            and age < FRESH_EVIDENCE_S
            and all(h in self.c.evidence and self.c.evidence[h].fenced for h in hosts)
        ):
            return f"fenced, by the evidence gathered {age:.1f} s ago for the plan"
        # the plan's attestations stand (they were recorded); the rest is gathered and probed again
        recorded = step.params.get("evidence") or {}
        attested = {
            h: str(e["by"])
            for h, e in recorded.items()
            if isinstance(e, dict) and e.get("kind") == "attested"
        }
        ev = gather(self.c.inv, hosts, attested=attested)
        seen = probe(self.c.inv, hosts).sightings
        self.problems = [f"{h} is not fenced ({e.how})" for h, e in ev.items() if not e.fenced]
        self.problems += [f"a partition, not a loss: {s}" for s in seen]
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


class EtcdFenceStop:
    """A lost voter's etcd stopped for good (restart=no, then a graceful stop), once asked again on
    its own host it still knows no leader: between plan and step (an approval can take an hour) the
    network may have healed. Done once it is not running and does not start again by itself."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        rt = self.c.runtime(str(step.host), _p(step, "name"))
        return not rt.is_running() and not (rt.exists() and rt.restarts())

    def run(self, step: Step) -> None:
        host = self.c.inv.host(str(step.host))
        rt = self.c.runtime(host.name, _p(step, "name"))
        if rt.is_running():
            own = asked_on_host(self.c.inv, host, self.c.executor(host.name))
            if isinstance(own, EndpointStatus) and own.leader:
                raise RecoveryStepError(
                    f"{host.name}'s etcd, asked on {host.name} again, now follows leader {own.leader:x} "
                    f"(term {own.raft_term}): a partition, not a loss; nothing was stopped: heal the "
                    "network and check `etcd-dr status`"
                )
            if not isinstance(own, EndpointStatus):  # running and silent even there: no write to lose
                self.c.say(f"{host.name}: its etcd did not answer on {host.name} ({own}); stopping it")
        rt.set_restart(False)
        rt.stop(float(step.params.get("timeout_s", STOP_TIMEOUT_S)))
        _wait(lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {host.name} stopped")


_COPY = 'rm -rf -- "$2.part" && cp -a -- "$1" "$2.part" && sync && mv -- "$2.part" "$2"'


class CopyDir:
    """A complete copy appears at dst atomically (copied to dst.part, our own, then renamed)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        return _exists(self.c.executor(str(step.host)), _p(step, "dst"), "-d")

    def run(self, step: Step) -> None:
        ex = self.c.executor(str(step.host))
        src, dst = _p(step, "src"), _p(step, "dst")
        if not _exists(ex, f"{src}/member", "-d"):
            raise RecoveryStepError(f"{step.host}: {src} holds no etcd data (no member dir); nothing copied")
        _quiet(self.c, step)
        ex.run(["sh", "-c", _COPY, "copy", src, dst], timeout=600, reason=f"back up {src} to {dst}")


class EtcdStop(EtcdKill):
    """Stops etcd with its WAL synced; done as for a kill.

    A follower is stopped gracefully (it flushes the WAL; ~1 s). A voter that still leads without a
    quorum would stall its stop trying to hand leadership to dead peers (measured: over 40 s) and
    only steps down after up to two election timeouts; instead one entry is proposed to it: the
    leader appends and fsyncs it (with the commit index it holds) at once, the entry can never
    commit, --force-new-cluster drops it, and the member is killed."""

    def _leads(self, step: Step) -> bool:
        ep = _p(step, "endpoint")
        try:
            return self.c.client(ep).status(ep, timeout=1.0).is_leader
        except EtcdDrError:
            return False  # not answering: nothing to hand over

    def run(self, step: Step) -> str:
        rt = self.c.runtime(str(step.host), _p(step, "name"))
        if step.params.get("sync_leader") and self._leads(step):
            ep = _p(step, "endpoint")
            with contextlib.suppress(EtcdDrError):  # it cannot commit: the error is expected
                self.c.client(ep).put(_p(step, "sync_key"), "never committed", timeout=1.0)
            rt.kill()
            _wait(lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {step.host} stopped")
            return "it led without a quorum: an entry was proposed so its WAL was synced, then it was killed"
        timeout = float(_p(step, "timeout_s"))
        rt.stop(timeout)
        _wait(lambda: not rt.is_running(), timeout + KILL_WAIT_S, f"etcd on {step.host} stopped")
        return "stopped gracefully"


def _exists(ex: Executor, path: str, test: str = "-e") -> bool:
    return ex.run(["test", test, path], check=False).ok


def _quiet(c: Ctx, step: Step) -> None:
    """Refuse to read a data dir while the plan's own member runs again (restarted by someone)."""
    stop = c.later("etcd-kill", step.host) or c.later("etcd-stop", step.host)
    if stop is not None and c.runtime(str(step.host), _p(stop, "name")).is_running():
        raise RecoveryStepError(f"{step.host}: etcd runs again: its data dir is not quiet, not copied")


class CopyFile:
    """A complete copy of one file appears at dst atomically (dst.part, then renamed)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        return _exists(self.c.executor(str(step.host)), _p(step, "dst"), "-f")

    def run(self, step: Step) -> None:
        ex = self.c.executor(str(step.host))
        src, dst = _p(step, "src"), _p(step, "dst")
        if not _exists(ex, src, "-f"):
            raise RecoveryStepError(f"{step.host}: {src} does not exist: no etcd db to restore from")
        _quiet(self.c, step)
        ex.run(["mkdir", "-p", "-m", "700", posixpath.dirname(dst)], reason="recovery work dir")
        ex.run(["sh", "-c", _COPY, "copy", src, dst], timeout=600, reason=f"copy {src} to {dst}")


def _sha256(ex: Executor, path: str) -> str | None:
    r = ex.run(["sha256sum", "--", path], check=False, timeout=600)
    return r.stdout.split()[0] if r.ok and r.stdout.strip() else None


class PutFile:
    """A local file (a cataloged snapshot) on the host at dst, its sha256 checked on both ends."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        return _sha256(self.c.executor(str(step.host)), _p(step, "dst")) == _p(step, "sha256")

    def run(self, step: Step) -> None:
        src, want = _p(step, "src"), _p(step, "sha256")
        try:
            with open(src, "rb") as f:
                data = f.read()  # whole in memory: the executor's put is one atomic write
        except OSError as e:
            raise RecoveryStepError(f"snapshot {src} cannot be read ({e.strerror}); nothing copied") from e
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise RecoveryStepError(
                f"snapshot {src} has sha256 {got[:12]}..., its catalog record says {want[:12]}...: the file "
                "changed since it was verified; nothing copied, verify it again (`etcd-dr snapshot verify`)"
            )
        ex = self.c.executor(str(step.host))
        dst = _p(step, "dst")
        ex.run(["mkdir", "-p", "-m", "700", posixpath.dirname(dst)], reason="recovery work dir")
        ex.put(data, dst, mode=0o600, reason=f"snapshot {_p(step, 'snapshot')} for the restore")


class SnapshotRestore:
    """`etcdctl|etcdutl snapshot restore` into a staging dir, with the member's own etcd build (a
    one-off container from its image, or the tool beside its binary). Done once the staging dir is
    complete, or was already swapped in."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        ex = self.c.executor(str(step.host))
        return _exists(ex, f"{_p(step, 'staging')}/member/wal", "-d") or _exists(ex, _swapped(step))

    def _template(self, step: Step) -> DockerRuntime | ProcessRuntime:
        """The member (or, on a resumed run, the member this plan retired) whose etcd build to use."""
        host = str(step.host)
        names = [_p(step, "name")]
        retire = self.c.later("retire-member", step.host)
        if retire is not None:
            names.append(_p(retire, "new_name"))
        for n in names:
            rt = self.c.runtime(host, n)
            if rt.exists():
                return rt
        raise RecoveryStepError(
            f"{host}: no etcd {' or '.join(names)} to take the etcd build from; the restore needs the "
            "member's image (docker) or unit (process)"
        )

    def run(self, step: Step) -> None:
        host = str(step.host)
        ex = self.c.executor(host)
        staging = _p(step, "staging")
        part = f"{staging}.part"
        if _exists(ex, part):  # an interrupted restore: keep it, never delete
            ex.run(
                ["mv", "--", part, f"{part}.failed-{int(time.time())}"], reason="set aside a partial restore"
            )
        argv = [str(a) for a in step.params["argv"]]  # type: ignore[attr-defined]
        argv = [f"--data-dir={part}" if a.startswith("--data-dir=") else a for a in argv]
        tool, rest = argv[0], argv[1:]
        tmpl = self._template(step)
        if isinstance(tmpl, DockerRuntime):
            t = tmpl.inspect()
            image = str((t.get("Config") or {}).get("Image") or "")
            bindir = posixpath.dirname(str(t["Path"]))
            work = _p(step, "work_dir")
            cmd = [
                tmpl.docker, "run", "--rm", "--network=none", "-v", f"{work}:{work}",
                "--entrypoint", posixpath.join(bindir, tool), image, *rest,
            ]  # fmt: skip
        else:
            cmd = [posixpath.join(posixpath.dirname(tmpl.exec_line()[0]), tool), *rest]
        r = ex.run(cmd, check=False, timeout=600, reason=f"restore {_p(step, 'db')} into {part}")
        if not r.ok:
            raise RecoveryStepError(
                f"{host}: {tool} snapshot restore failed (exit {r.rc}): {r.stderr.strip()[-300:]}; the data "
                "dir is untouched"
            )
        ex.run(["mv", "--", part, staging], reason="restored dir complete")


def _swapped(step: Step) -> str:
    """The marker the swap leaves in the plan's work dir once the restored dir is in place."""
    return posixpath.join(posixpath.dirname(_p(step, "staging")), "swapped")


_SWAP = """set -e
d=$1 s=$2 a=$3 m=$4
if [ ! -e "$s" ]; then
  [ -d "$d/member" ] || { echo "no restored dir $s and no data dir $d" >&2; exit 3; }
  : > "$m"; exit 0
fi
if [ -e "$d" ]; then
  [ ! -e "$a" ] || { echo "$a exists already: not moving $d over it" >&2; exit 3; }
  mv -- "$d" "$a"
fi
mv -- "$s" "$d"
sync
: > "$m"
"""


class SwapDir:
    """The old data dir moved aside (kept), the restored one renamed into its place; both renames
    on one filesystem. Done once the marker is written (a crash between the renames resumes)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool:
        ex = self.c.executor(str(step.host))
        return _exists(ex, _swapped(step)) and not _exists(ex, _p(step, "staging"))

    def run(self, step: Step) -> None:
        ex = self.c.executor(str(step.host))
        _quiet(self.c, step)
        d, s, a = _p(step, "data_dir"), _p(step, "staging"), _p(step, "aside")
        r = ex.run(["sh", "-c", _SWAP, "swap", d, s, a, _swapped(step)], check=False, reason=f"swap {s} in")
        if not r.ok:
            raise RecoveryStepError(f"{step.host}: {r.stderr.strip()}; nothing deleted")


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
        "etcd-fence-stop": EtcdFenceStop(c),
        "copy-dir": CopyDir(c),
        "etcd-stop": EtcdStop(c),
        "copy-file": CopyFile(c),
        "put-file": PutFile(c),
        "snapshot-restore": SnapshotRestore(c),
        "swap-dir": SwapDir(c),
        "retire-member": RetireMember(c),
        "etcd-run": EtcdRun(c),
        "wait-healthy": WaitHealthy(c),
        "verify-cluster": VerifyCluster(c),
    }


__all__ = ["Ctx", "RecoveryStepError", "handlers", "recovery_args"]
