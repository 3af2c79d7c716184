"""The recovery step vocabulary: each action of etcd_dr.recovery.plan's plans (voter restore,
force-new-cluster, learner restore, snapshot restore) is a `RecoveryAction`, a frozen params
dataclass and its handler, side by side (`VOCABULARY` pairs them), for both runtimes (Docker as RKE
runs etcd, and a plain process), over SSH. The planner builds `Step(action=RecoveryAction.X,
params=XParams(...))`; the handler reads `step.typed(XParams)`; a journal reads the params back
into the same types (`typed_plan`).

Every `done()` only observes (one remote round trip where it can: one `docker inspect` for all the
containers a check needs, one script for several paths) and checks the step's postcondition
against the hosts as they are now, including what later steps of the same plan leave behind, so
that a re-run of the same plan after a crash at any point skips what is done: once the forced
member exists (or was renamed aside), the member is never forced again. Data dirs are copied, never
deleted; old members are renamed and kept with restart=no. A member is started as a copy of the
retired one (`docker inspect`: image, entrypoint, mounts, network, environment; its etcd arguments)
with only the cluster flags changed.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import posixpath
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.etcd.errors import EtcdTimeout, EtcdUnavailable
from etcd_dr.plans import Params, Plan, Step, StepHandler, typed_steps
from etcd_dr.recovery.evidence import FenceEvidence, FenceKind
from etcd_dr.recovery.fencing import asked_on_host, gather, how_to_fence, probe
from etcd_dr.runtime import (
    DockerRuntime,
    MemberParams,
    MemberStatus,
    ProcessRuntime,
    runtime_for,
)
from etcd_dr.stepctx import Handler, StepContext, wait

FORCE_FLAG = "--force-new-cluster"
KILL_WAIT_S = 15.0
STOP_TIMEOUT_S = 10.0
# how often a restarted member is asked whether it leads: a Status over a warm channel costs a few
# ms, and every poll saved off the election's end is RTO (the hand runbook loops every 0.1 s)
WAIT_POLL_S = 0.05
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


# --- the vocabulary: actions and their params ----------------------------------------------------


class RecoveryAction(enum.StrEnum):
    """Every action a recovery plan may hold; `VOCABULARY` names its params type and handler."""

    FENCE_CHECK = "fence-check"
    FENCE_STOP = "etcd-fence-stop"
    STOP = "etcd-stop"
    COPY_DIR = "copy-dir"
    COPY_FILE = "copy-file"
    PUT_FILE = "put-file"
    SNAPSHOT_RESTORE = "snapshot-restore"
    SWAP_DIR = "swap-dir"
    RETIRE = "retire-member"
    RUN = "etcd-run"
    WAIT_HEALTHY = "wait-healthy"
    VERIFY = "verify-cluster"


@dataclass(frozen=True)
class RecordedFence(Params):
    """The evidence a voter was fenced by when the plan was made (an attestation stands later)."""

    kind: FenceKind
    how: str
    by: str | None


@dataclass(frozen=True)
class FenceCheckParams(Params):
    hosts: tuple[str, ...]
    ports: tuple[int, ...]
    evidence: Mapping[str, RecordedFence]


@dataclass(frozen=True)
class FenceStopParams(MemberParams):
    timeout_s: int


@dataclass(frozen=True)
class StopParams(MemberParams):
    timeout_s: int
    sync_leader: bool  # a voter that leads without quorum: propose one entry (WAL fsynced), then kill
    sync_key: str
    # a voter that knows no leader: how long to wait for its next campaign (which fsyncs its
    # HardState) before it is killed instead of stopped; None (a learner, a journal from before): stop it
    campaign_wait_s: float | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class CopyParams(Params):
    """copy-dir and copy-file: src copied to dst on the step's host."""

    src: str
    dst: str


@dataclass(frozen=True)
class PutFileParams(Params):
    src: str  # on this machine
    dst: str  # on the host
    sha256: str
    snapshot: str  # the catalog id


@dataclass(frozen=True)
class RestoreParams(MemberParams):
    db: str
    staging: str
    work_dir: str  # a one-off container mounts it at the same path
    argv: tuple[str, ...]  # argv[0] is the tool: etcdctl (3.4) or etcdutl


@dataclass(frozen=True)
class SwapParams(Params):
    data_dir: str
    staging: str
    aside: str


@dataclass(frozen=True)
class RetireParams(MemberParams):
    new_name: str
    restart: str


@dataclass(frozen=True)
class RunParams(MemberParams):
    member: str
    initial_cluster: str
    extra_flags: tuple[str, ...]
    args: tuple[str, ...]  # used when the retired member is gone (its own args otherwise)
    restart: str  # "always" | "no"
    image_from: str  # same etcd version as the data: the retired member's image
    forced_name: str | None = field(default=None, metadata={"omit_none": True})  # the forced one, renamed

    @property
    def forced(self) -> bool:
        return FORCE_FLAG in self.extra_flags


@dataclass(frozen=True)
class WaitParams(Params):
    endpoint: str
    members: int
    timeout_s: int


@dataclass(frozen=True)
class VerifyParams(Params):
    endpoint: str
    members: int
    min_revision: int
    probe_key: str
    count_keys: bool


# --- the context -----------------------------------------------------------------------------------


@dataclass
class Ctx(StepContext):
    """What the handlers share (etcd_dr.stepctx: executors, clients, file verbs), and the plan (for
    what later steps leave behind), the fencing evidence gathered for it, and what the verification
    found."""

    plan: Plan = field(default_factory=lambda: Plan("recover", "", ""))
    evidence: Mapping[str, FenceEvidence] = field(default_factory=dict)  # gathered while planning
    evidence_at: float | None = None  # time.monotonic() when it was gathered
    first_write_at: float | None = None  # wall clock of the first accepted write (the probe)
    keys: int | None = None
    revision: int | None = None

    def runtime(self, host: str, name: str) -> DockerRuntime | ProcessRuntime:
        """The member runtime on host under container (or unit) name `name`."""
        rt = runtime_for(self.inv, self.executor(host), host=self.inv.host(host))
        if isinstance(rt, DockerRuntime):
            return DockerRuntime(rt.ex, name, rt.image, docker=rt.docker, binds=rt.binds)
        return ProcessRuntime(
            rt.ex, rt.binary, name, unit_dir=rt.unit_dir, run_dir=rt.run_dir, log_dir=rt.log_dir
        )

    def members(self, host: str, *names: str) -> dict[str, MemberStatus]:
        """The status of each member (container or unit) named on host: one round trip."""
        return self.runtime(host, names[0]).statuses(*names)

    def later(self, action: RecoveryAction, host: str | None) -> Step | None:
        """The plan's step with this action on this host (the first one)."""
        return next((s for s in self.plan.steps if s.action == action and s.host == host), None)

    def tally(self, endpoint: str) -> None:
        """Count the keys and read the revision (one count-only range) for the result."""
        count = self.client(endpoint).range(b"\0", b"\0", count_only=True, timeout=2.0)
        self.keys, self.revision = count.count, count.header.revision


def _host(step: Step) -> str:
    if step.host is None:
        raise RecoveryStepError(f"step {step.id}: no host; the plan is malformed, plan again")
    return step.host


# --- the handlers, one per action --------------------------------------------------------------------


class FenceCheck(Handler[Ctx]):
    """Fresh evidence that every other voter can no longer take part in the old cluster."""

    def _fresh(self, p: FenceCheckParams) -> str | None:
        at = self.c.evidence_at
        age = time.monotonic() - at if at is not None else None
        if (
            age is not None
            and age < FRESH_EVIDENCE_S
            and all(h in self.c.evidence and self.c.evidence[h].fenced for h in p.hosts)
        ):
            return f"fenced, by the evidence gathered {age:.1f} s ago for the plan"
        return None

    def _problems(self, p: FenceCheckParams) -> list[str]:
        # the plan's attestations stand (they were recorded); the rest is gathered and probed again
        attested = {h: str(e.by) for h, e in p.evidence.items() if e.kind is FenceKind.ATTESTED}
        ev = gather(self.c.inv, list(p.hosts), attested=attested)
        seen = probe(self.c.inv, list(p.hosts)).sightings
        return [f"{h} is not fenced ({e.how})" for h, e in ev.items() if not e.fenced] + [
            f"a partition, not a loss: {s}" for s in seen
        ]

    def done(self, step: Step) -> bool | str:
        p = step.typed(FenceCheckParams)
        return self._fresh(p) or not self._problems(p)

    def run(self, step: Step) -> str:
        # asked again, not remembered from done(): done() only observes
        problems = self._problems(step.typed(FenceCheckParams))
        if problems:
            raise RecoveryStepError(
                f"{'; '.join(problems)}; fence it, then run `etcd-dr recover` again (this plan resumes)"
            )
        return "fenced on a second look"


class EtcdFenceStop(Handler[Ctx]):
    """A lost voter's etcd stopped for good (restart=no, then TERM and after the step's timeout
    KILL), once asked again on its own host it still knows no leader: between plan and step (an
    approval can take an hour) the network may have healed. Done once it is not running and does
    not start again by itself."""

    def done(self, step: Step) -> bool:
        p = step.typed(FenceStopParams)
        st = self.c.members(_host(step), p.name)[p.name]
        return not st.running and not (st.exists and st.restarts)

    def run(self, step: Step) -> None:
        p = step.typed(FenceStopParams)
        host = self.c.inv.host(_host(step))
        rt = self.c.runtime(host.name, p.name)
        if rt.is_running():
            own = asked_on_host(self.c.inv, host, self.c.executor(host.name))
            if isinstance(own, EndpointStatus) and own.leader:
                raise RecoveryStepError(
                    f"{host.name}'s etcd, asked on {host.name} again, now follows leader {own.leader:x} "
                    f"(term {own.raft_term}): a partition, not a loss; nothing was stopped: heal the "
                    "network and check `etcd-dr status`"
                )
            if not isinstance(own, EndpointStatus):  # silence is not evidence, even there
                raise RecoveryStepError(
                    f"{host.name}'s etcd runs but did not answer on {host.name} itself ({own}); nothing "
                    f"was stopped: {how_to_fence(self.c.inv, host)}, then run `etcd-dr recover` again "
                    "(this plan resumes)"
                )
        rt.set_restart(False)
        rt.stop(float(p.timeout_s))
        wait(
            lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {host.name} stopped", error=RecoveryStepError
        )


# Whether the member campaigned since it last had a leader, from its log: the last raft state change
# in its recent past is "became candidate" (else the next one is waited for, up to $1 s). A campaign
# raises the term and votes for itself, and etcd's WAL fsyncs a HardState whose term or vote changed
# (raft.MustSync; wal.Save flushes its buffer, then fsyncs) with the commit index it holds: after it,
# a kill loses nothing the member knew committed (etcd-io/etcd#14009). Status cannot tell: its
# raft_term is the term of the last applied entry, which a candidate never moves (seen on the lab).
_CAMPAIGN = r"""w=$1 look=$2
now=$(date +%s.%N); since=$((${now%.*} - look))
pat='became (leader|follower|candidate|pre-candidate) at term [0-9]+|elected leader [0-9a-f]+ at term [0-9]+'
last=$(@PAST@ | grep -oE "$pat" | tail -n 1)
case $last in "became candidate at term "*) echo "$last"; exit 0 ;; esac
since=$now
line=$(timeout "$w" @FOLLOW@ | grep -m 1 -oE 'became candidate at term [0-9]+') && { echo "$line"; exit 0; }
exit 1
"""
# Docker: the graceful stop, watched: TERM (docker stop -t $3) in the background while the log is
# followed. A campaign seen before the member exits (its graceful stop hangs, raft campaigns on)
# kills it (0.5 s later, see CAMPAIGN_SAVE_S). So does "stopping serving peer traffic": etcd logs
# it after its server stopped (Etcd.Close: Server.Stop returns once raft's storage closed, and a
# WAL's Close syncs it, then the backend closed), before it drains the peer listener (Go's
# http.Server.Shutdown polls every 0.5 s: measured 0.54 s of a 0.56 s stop). The kill is sent from
# the loop that reads the log, so nothing waits for the drain. One that already campaigned since
# it last had a leader is killed at once. First line: "already|campaigned became candidate at
# term N", "closed", or "stopped".
_STOP_WATCHED = r"""w=$1 look=$2
now=$(date +%s.%N); since=$((${now%.*} - look))
pat='became (leader|follower|candidate|pre-candidate) at term [0-9]+|elected leader [0-9a-f]+ at term [0-9]+'
last=$(@PAST@ | grep -oE "$pat" | tail -n 1)
case $last in "became candidate at term "*)
  sleep 0.5; @KILL@ >/dev/null 2>&1; echo "already $last"; exit 0 ;;
esac
since=$now
@STOP@ >/dev/null 2>&1 & s=$!
timeout "$w" @FOLLOW@ | while IFS= read -r l; do
  case $l in
    *"stopping serving peer traffic"*)
      @KILL@ >/dev/null 2>&1; echo closed; break ;;
    *"became candidate at term "*)
      [ "$(@RUNNING@ 2>/dev/null)" = true ] || continue
      sleep 0.5; @KILL@ >/dev/null 2>&1
      echo "campaigned $(printf '%s\n' "$l" | grep -m 1 -oE 'became candidate at term [0-9]+')"; break ;;
  esac
done
wait "$s"
echo "stopped $(@EXITCODE@)"
"""


class WatchedStop(enum.StrEnum):
    """How _STOP_WATCHED ended: its first line's first word, or, when that is "stopped", the
    container's exit code (TIMED_OUT). Its last line is "stopped <exit code>" unless it ended at
    once (ALREADY)."""

    ALREADY = "already"  # it had campaigned before the stop was asked: killed
    CAMPAIGNED = "campaigned"  # it campaigned during the graceful stop: killed
    CLOSED = "closed"  # its server closed (WAL synced): killed during the peer listener's drain
    # (or its drain was over first: `docker logs -f` shows a line some ms after etcd wrote it, and
    # a drain with only idle peer connections ends at once; then it exits 0 by itself)
    STOPPED = "stopped"  # it exited by itself
    TIMED_OUT = "timed-out"  # docker's stop timeout ran out and docker killed it (exit 137)


def stop_watched_script(rt: DockerRuntime, timeout_s: int) -> str:
    """_STOP_WATCHED for this container; its arguments: the follow's bound and the look back (s)."""
    d, c = shlex.quote(rt.docker), shlex.quote(rt.container)
    return (
        _STOP_WATCHED.replace("@PAST@", rt.log_sh(follow=False))
        .replace("@FOLLOW@", rt.log_sh(follow=True))
        .replace("@STOP@", f"{d} stop -t {int(timeout_s)} {c}")
        .replace("@KILL@", f"{d} kill {c}")
        .replace("@RUNNING@", f"{d} inspect -f '{{{{.State.Running}}}}' {c}")
        .replace("@EXITCODE@", f"{d} inspect -f '{{{{.State.ExitCode}}}}' {c}")
    )


def read_stop_watched(stdout: str) -> tuple[WatchedStop, str | None, int | None]:
    """How _STOP_WATCHED ended, the campaign line that got the member killed (if one did) and the
    container's exit code (None where the script did not wait for it)."""
    lines = stdout.splitlines() or [""]
    when, _, line = lines[0].partition(" ")
    last, _, code_s = lines[-1].partition(" ")
    code = int(code_s) if last == WatchedStop.STOPPED and code_s.strip().isdigit() else None
    if when in (WatchedStop.ALREADY, WatchedStop.CAMPAIGNED) and line:
        return WatchedStop(when), line, code
    if when == WatchedStop.CLOSED:
        return WatchedStop.CLOSED, None, code
    # docker stop sends KILL after the timeout: the container then exits 137 (128 + SIGKILL)
    return (WatchedStop.STOPPED if code != 137 else WatchedStop.TIMED_OUT), None, code


# The leader's WAL files, one line each: name, size, mtime to the ns (a write moves the mtime).
_WAL_MARK = 'stat -c "%n %s %y" -- "$1"/*.wal'
# Waits for the WAL files to differ from the mark $2 (polls every 5 ms; bounded by a `timeout`)
_WAL_WRITTEN = r"""d=$1 mark=$2
while [ "$(stat -c '%n %s %y' -- "$d"/*.wal 2>/dev/null)" = "$mark" ]; do sleep 0.005; done
"""
# the bound on the proposal to a leader without a quorum (it can never commit): its WAL write is
# waited for up to this long, and where no write can be seen, all of it
PROPOSAL_WAIT_S = 1.0
# after a write to the WAL was seen: the write that moved the mtime takes microseconds (then it is
# in the page cache, which a kill does not lose), and its fdatasync milliseconds on a healthy disk
WAL_SETTLE_S = 0.05


# "became candidate" is logged as raft steps; the HardState it changed is saved when etcd's raft
# loop handles that Ready, milliseconds later: the kill waits this long after seeing the line
CAMPAIGN_SAVE_S = 0.5


class EtcdStop(Handler[Ctx]):
    """Stops etcd with its WAL synced; done once it is not running, or the plan already retired it.

    A voter that still leads without a quorum would stall its stop trying to hand leadership to dead
    peers (measured: over 40 s) and only steps down after up to two election timeouts; instead one
    entry is proposed to it: the leader appends and fsyncs it (with the commit index it holds) at
    once, the entry can never commit, --force-new-cluster drops it, and the member is killed once
    its WAL was written (see _propose_synced).

    A voter that knows no leader (a former leader that stepped down, or a follower whose leader is
    gone) campaigns every election timeout or two, and its graceful stop hangs until docker kills it
    (measured: docker's whole 30 s, exit 137, "skipped leadership transfer; local server is not
    leader", campaigning on). Its next campaign fsyncs the commit index it holds (see _CAMPAIGN):
    once one was seen since it last had a leader, it is killed. Docker: the graceful stop runs while
    the log is watched (_STOP_WATCHED), so a member that stops by itself is not held up (it is
    killed once its server closed, its WAL synced, instead of draining its peer listener for 0.5 s),
    and one that hangs is killed at its next campaign. A member whose Status says it knows no
    leader (either runtime, no pre-vote) is not sent TERM first: its campaign is waited for (up to
    three election timeouts + 2 s), then it is killed. One that does not campaign within the wait (etcd 3.5's
    pre-vote keeps the term without a majority) is stopped gracefully, as before."""

    def done(self, step: Step) -> bool:
        p, host = step.typed(StopParams), _host(step)
        retire = self.c.later(RecoveryAction.RETIRE, host)
        names = [p.name] + ([retire.typed(RetireParams).new_name] if retire is not None else [])
        st = self.c.members(host, *names)  # one look at both
        return (retire is not None and st[names[1]].exists) or not st[p.name].running

    def _status(self, endpoint: str) -> EndpointStatus | None:
        try:
            return self.c.client(endpoint).status(endpoint, timeout=1.0)
        except EtcdDrError:
            return None  # not answering: nothing to hand over, nothing known of its raft state

    def _campaign(self, host: str, rt: DockerRuntime | ProcessRuntime, wait_s: float) -> str | None:
        """The member's campaign since it last had a leader ("became candidate at term N"), waited
        for up to wait_s; None if none came. One remote script."""
        script = _CAMPAIGN.replace("@PAST@", rt.log_sh(follow=False))
        script = script.replace("@FOLLOW@", rt.log_sh(follow=True))
        r = self.c.executor(host).run(
            ["sh", "-c", script, "campaign", f"{wait_s:g}", str(int(wait_s) + 30)],
            check=False,
            timeout=wait_s + 15,
            reason="read etcd's log for a campaign since it last had a leader",
        )
        return (r.stdout.strip() or None) if r.ok else None

    def _stop_watched(
        self, host: str, rt: DockerRuntime, p: StopParams
    ) -> tuple[WatchedStop, str | None, int | None]:
        """Docker: the watched stop (one remote script, stop_watched_script), read by
        read_stop_watched."""
        w = float(p.timeout_s)  # the follow ends when the container exits; the stop is bounded by it
        r = self.c.executor(host).run(
            ["sh", "-c", stop_watched_script(rt, p.timeout_s), "stop", f"{w:g}", str(int(w) + 30)],
            check=False,
            timeout=p.timeout_s + w + 30,
            reason="stop etcd gracefully; kill it once it campaigned (a campaign fsyncs its WAL)",
        )
        if not r.ok:
            raise RecoveryStepError(f"{host}: stopping etcd failed (exit {r.rc}): {r.stderr.strip()[-300:]}")
        return read_stop_watched(r.stdout)

    def _pre_vote(self, host: str, name: str, st: EndpointStatus) -> bool:
        """Whether the member runs with raft's pre-vote (3.5's default; 3.4's is off): without a
        majority a pre-candidate never raises its term, so no campaign fsyncs anything to wait for."""
        args = self.c.members(host, name)[name].args
        for a in reversed(args):
            if a == "--pre-vote" or a.startswith("--pre-vote="):
                return a.split("=", 1)[-1].lower() != "false" if "=" in a else True
        major_minor = tuple(int(x) for x in st.version.split(".")[:2] if x.isdigit())
        return major_minor >= (3, 5)

    def _propose_synced(self, host: str, p: StopParams) -> tuple[threading.Thread, str]:
        """Proposes one entry to the leader (in a thread: it can never commit) and waits until its
        WAL files change, up to PROPOSAL_WAIT_S: the proposal's append makes etcd flush the WAL's
        buffer, the commit index it holds with it, and fsync. Any WAL write after the peers were
        gone carries that commit index, which stopped moving when they went. The files are those in
        the data dir's member/wal (a member with its own --wal-dir has none there: then, as where
        the host cannot be read, the proposal's whole timeout is waited). Returns the proposal's
        thread and what was seen, in words. Two remote commands."""
        ex = self.c.executor(host)
        wal = posixpath.join(p.data_dir, "member", "wal")
        mark = ex.run(
            ["sh", "-c", _WAL_MARK, "wal", wal],
            check=False,
            timeout=10,
            reason="read the WAL's files before a proposal",
        )
        client = self.c.client(p.endpoint)

        def propose() -> None:
            with contextlib.suppress(EtcdDrError):  # it cannot commit: the error is expected
                client.put(p.sync_key, "never committed", timeout=PROPOSAL_WAIT_S)

        proposal = threading.Thread(target=propose, name="wal-sync-proposal", daemon=True)
        t0 = time.monotonic()
        proposal.start()
        if mark.ok and mark.stdout.strip():
            r = ex.run(
                [
                    "timeout",
                    f"{PROPOSAL_WAIT_S:g}",
                    "sh",
                    "-c",
                    _WAL_WRITTEN,
                    "wal",
                    wal,
                    mark.stdout.strip(),
                ],
                check=False,
                timeout=PROPOSAL_WAIT_S + 10,
                reason="wait for the proposal's write to the WAL",
            )
            if r.ok:
                time.sleep(WAL_SETTLE_S)
                return proposal, (
                    f"an entry was proposed and its WAL written {time.monotonic() - t0:.2f} s later "
                    "(with the commit index it holds)"
                )
        proposal.join(PROPOSAL_WAIT_S + 1)
        return proposal, (
            f"an entry was proposed, and its {PROPOSAL_WAIT_S:g} s timeout waited out (no write to "
            f"{wal} seen: the append fsyncs at once on a healthy disk)"
        )

    def _kill(self, host: str, rt: DockerRuntime | ProcessRuntime) -> None:
        rt.kill()
        wait(lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {host} stopped", error=RecoveryStepError)

    def run(self, step: Step) -> str:
        p, host = step.typed(StopParams), _host(step)
        rt = self.c.runtime(host, p.name)
        st = self._status(p.endpoint) if p.sync_leader else None
        if st is not None and st.is_leader:
            proposal, synced = self._propose_synced(host, p)
            self._kill(host, rt)
            proposal.join(PROPOSAL_WAIT_S + 1)  # failed by the kill at once
            return f"it led without a quorum: {synced}, then it was killed"
        if st is not None and st.leader == 0 and p.campaign_wait_s and not self._pre_vote(host, p.name, st):
            # known to campaign: wait for it untouched (one lab run: a watched stop of such a member
            # saw the campaign 20.3 s after the TERM; waiting without one, 12.0 s)
            t0 = time.monotonic()
            seen = self._campaign(host, rt, p.campaign_wait_s)
            if seen is not None:
                time.sleep(CAMPAIGN_SAVE_S)
                self._kill(host, rt)
                return (
                    f"it knew no leader and campaigned since it last had one ({seen}; waited "
                    f"{time.monotonic() - t0:.1f} s): a new term is fsynced to its WAL with the commit index "
                    "it holds, so it was killed, not stopped (a graceful stop of a campaigning member "
                    "hangs until docker kills it)"
                )
        if isinstance(rt, DockerRuntime):  # a learner too: it never campaigns, and drains the same
            t0 = time.monotonic()
            how, seen, code = self._stop_watched(host, rt, p)
            wait(lambda: not rt.is_running(), KILL_WAIT_S, f"etcd on {host} stopped", error=RecoveryStepError)
            if seen is not None:
                why = "it had already"
                if how is WatchedStop.CAMPAIGNED:
                    why = "its graceful stop did not finish, and it"
                return (
                    f"{why} campaigned since it last had a leader ({seen}; "
                    f"{time.monotonic() - t0:.1f} s): a new term is fsynced to its WAL with the commit index "
                    "it holds: killed (a graceful stop of a campaigning member hangs until docker kills it)"
                )
            if how is WatchedStop.CLOSED:
                closed = (
                    f"stopped gracefully up to its server's close ({time.monotonic() - t0:.2f} s: "
                    "'stopping serving peer traffic' logged, so its WAL and db were synced and closed), "
                )
                if code == 137:
                    return closed + "then killed instead of waiting out the peer listener's drain (0.5-1 s)"
                if code is None:
                    return closed + "then stopped (its exit code could not be read)"
                return closed + f"and it exited by itself (code {code}) before the kill: a short drain"
            if how is WatchedStop.STOPPED:
                return "stopped gracefully"
            if not p.sync_leader:
                return (
                    f"it did not stop within {p.timeout_s:g} s: killed by docker; its db may lack what it "
                    "applied in its last batch interval (its WAL holds it)"
                )
            return (
                f"it did not stop within {p.timeout_s:g} s and was not seen campaigning (etcd 3.5's pre-vote "
                "keeps the term): killed by docker; entries past its last synced commit index may be dropped"
            )
        by_itself = rt.stop(float(p.timeout_s))
        wait(
            lambda: not rt.is_running(),
            p.timeout_s + KILL_WAIT_S,
            f"etcd on {host} stopped",
            error=RecoveryStepError,
        )
        if not by_itself:
            # Said, not hidden: the WAL holds every entry it acknowledged, but the commit index it
            # last synced may be older than the one it knew, and --force-new-cluster drops entries
            # past the synced one; the verify step compares the revision with the plan's.
            return (
                f"it did not stop within {p.timeout_s:g} s (a member that led stalls its stop, NOTES) "
                "and was killed: entries past its last synced commit index may be dropped"
            )
        return "stopped gracefully"


def _quiet(c: Ctx, host: str) -> None:
    """Refuse to read a data dir while the plan's own member runs again (restarted by someone)."""
    stop = c.later(RecoveryAction.STOP, host)
    if stop is not None:
        name = stop.typed(StopParams).name
        if c.members(host, name)[name].running:
            raise RecoveryStepError(f"{host}: etcd runs again: its data dir is not quiet, not copied")


class CopyDir(Handler[Ctx]):
    """A complete copy appears at dst atomically (copied to dst.part, our own, then renamed)."""

    def done(self, step: Step) -> bool:
        return self.c.fs(_host(step)).is_dir(step.typed(CopyParams).dst)

    def run(self, step: Step) -> None:
        p, host = step.typed(CopyParams), _host(step)
        fs = self.c.fs(host)
        if not fs.is_dir(f"{p.src}/member"):
            raise RecoveryStepError(f"{host}: {p.src} holds no etcd data (no member dir); nothing copied")
        _quiet(self.c, host)
        fs.copy_atomic(p.src, p.dst, reason=f"back up {p.src} to {p.dst}")


class CopyFile(Handler[Ctx]):
    """A complete copy of one file appears at dst atomically (dst.part, then renamed)."""

    def done(self, step: Step) -> bool:
        return self.c.fs(_host(step)).is_file(step.typed(CopyParams).dst)

    def run(self, step: Step) -> None:
        p, host = step.typed(CopyParams), _host(step)
        _quiet(self.c, host)
        # the check, the work dir and the copy: one round trip
        if not self.c.fs(host).copy_file_atomic(p.src, p.dst, reason=f"copy {p.src} to {p.dst}"):
            raise RecoveryStepError(f"{host}: {p.src} does not exist: no etcd db to restore from")


class PutFile(Handler[Ctx]):
    """A local file (a cataloged snapshot) on the host at dst, its sha256 checked on both ends."""

    def done(self, step: Step) -> bool:
        p = step.typed(PutFileParams)
        return self.c.fs(_host(step)).sha256(p.dst) == p.sha256

    def run(self, step: Step) -> None:
        p = step.typed(PutFileParams)
        try:
            with open(p.src, "rb") as f:
                data = f.read()  # whole in memory: the executor's put is one atomic write
        except OSError as e:
            raise RecoveryStepError(f"snapshot {p.src} cannot be read ({e.strerror}); nothing copied") from e
        got = hashlib.sha256(data).hexdigest()
        if got != p.sha256:
            raise RecoveryStepError(
                f"snapshot {p.src} has sha256 {got[:12]}..., its catalog record says {p.sha256[:12]}...: "
                "the file changed since it was verified; nothing copied, verify it again "
                "(`etcd-dr snapshot verify`)"
            )
        self.c.fs(_host(step)).write_atomic(data, p.dst, reason=f"snapshot {p.snapshot} for the restore")


def _swapped(staging: str) -> str:
    """The marker the swap leaves in the plan's work dir once the restored dir is in place."""
    return posixpath.join(posixpath.dirname(staging), "swapped")


class SnapshotRestore(Handler[Ctx]):
    """`etcdctl|etcdutl snapshot restore` into a staging dir, with the member's own etcd build (a
    one-off container from its image, or the tool beside its binary). Done once the staging dir is
    complete, or was already swapped in."""

    def done(self, step: Step) -> bool:
        p = step.typed(RestoreParams)
        return any(
            self.c.fs(_host(step)).tests(("-d", f"{p.staging}/member/wal"), ("-e", _swapped(p.staging)))
        )

    def _template(self, host: str, p: RestoreParams) -> tuple[DockerRuntime | ProcessRuntime, MemberStatus]:
        """The member (or, on a resumed run, the member this plan retired) whose etcd build to use."""
        names = [p.name]
        retire = self.c.later(RecoveryAction.RETIRE, host)
        if retire is not None:
            names.append(retire.typed(RetireParams).new_name)
        st = self.c.members(host, *names)
        for n in names:
            if st[n].exists:
                return self.c.runtime(host, n), st[n]
        raise RecoveryStepError(
            f"{host}: no etcd {' or '.join(names)} to take the etcd build from; the restore needs the "
            "member's image (docker) or unit (process)"
        )

    def run(self, step: Step) -> None:
        p, host = step.typed(RestoreParams), _host(step)
        ex = self.c.executor(host)
        part = f"{p.staging}.part"
        argv = [f"--data-dir={part}" if a.startswith("--data-dir=") else a for a in p.argv]
        tool, rest = argv[0], argv[1:]
        tmpl, seen = self._template(host, p)
        if isinstance(tmpl, DockerRuntime):
            t = dict(seen.inspected) if seen.inspected is not None else tmpl.inspect()
            image = str((t.get("Config") or {}).get("Image") or "")
            bindir = posixpath.dirname(str(t["Path"]))
            cmd = [
                tmpl.docker, "run", "--rm", "--network=none", "-v", f"{p.work_dir}:{p.work_dir}",
                "--entrypoint", posixpath.join(bindir, tool), image, *rest,
            ]  # fmt: skip
        else:
            cmd = [posixpath.join(posixpath.dirname(tmpl.exec_line()[0]), tool), *rest]
        # an interrupted restore set aside (never deleted), the restore, the rename: one round trip
        r = ex.run(
            ["sh", "-c", _RESTORE, "restore", part, p.staging, f"failed-{int(time.time())}", *cmd],
            check=False,
            timeout=600,
            reason=f"restore {p.db} into {part}, then rename it to {p.staging}",
        )
        if not r.ok:
            raise RecoveryStepError(
                f"{host}: {tool} snapshot restore failed (exit {r.rc}): {r.stderr.strip()[-300:]}; the data "
                "dir is untouched"
            )


# $1 the staging dir's .part, $2 the staging dir, $3 a suffix, then the restore's argv: a partial
# restore left by a crash is moved aside, never deleted; nothing is renamed over what is there
_RESTORE = """p=$1 s=$2 x=$3; shift 3
if [ -e "$p" ]; then
  [ ! -e "$p.$x" ] || { echo "$p.$x exists already: not moving $p over it" >&2; exit 5; }
  mv -- "$p" "$p.$x" || exit 5
fi
"$@" || exit
[ ! -e "$s" ] || { echo "$s exists already: not renaming $p over it" >&2; exit 5; }
mv -- "$p" "$s"
"""

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


class SwapDir(Handler[Ctx]):
    """The old data dir moved aside (kept), the restored one renamed into its place; both renames
    on one filesystem. Done once the marker is written (a crash between the renames resumes)."""

    def done(self, step: Step) -> bool:
        p = step.typed(SwapParams)
        marker, staging = self.c.fs(_host(step)).tests(("-e", _swapped(p.staging)), ("-e", p.staging))
        return marker and not staging

    def run(self, step: Step) -> None:
        p, host = step.typed(SwapParams), _host(step)
        _quiet(self.c, host)
        r = self.c.executor(host).run(
            ["sh", "-c", _SWAP, "swap", p.data_dir, p.staging, p.aside, _swapped(p.staging)],
            check=False,
            reason=f"swap {p.staging} in",
        )
        if not r.ok:
            raise RecoveryStepError(f"{host}: {r.stderr.strip()}; nothing deleted")


class RetireMember(Handler[Ctx]):
    """Done when the renamed old member exists and will not restart by itself."""

    def done(self, step: Step) -> bool:
        p = step.typed(RetireParams)
        old = self.c.members(_host(step), p.new_name)[p.new_name]
        return old.exists and not old.restarts

    def run(self, step: Step) -> None:
        p, host = step.typed(RetireParams), _host(step)
        st = self.c.members(host, p.new_name, p.name)
        old = self.c.runtime(host, p.new_name)
        if not st[p.new_name].exists:
            if not st[p.name].exists:
                raise RecoveryStepError(f"{host}: no {p.name} to retire and no {p.new_name}")
            old = self.c.runtime(host, p.name).rename(p.new_name)
        old.set_restart(False)


class EtcdRun(Handler[Ctx]):
    """Starts the member as a copy of the retired one. The forced start is done once the forced
    member exists (running or renamed aside) or the member runs without the flag in a one-member
    cluster; the plain start is done when the member runs with exactly the expected arguments and
    restart policy."""

    @staticmethod
    def expected(p: RunParams, template: MemberStatus) -> list[str]:
        old = list(template.args) if template.exists else list(p.args)
        return recovery_args(old, p.initial_cluster, p.extra_flags)

    def _one_member(self, endpoint: str) -> bool:
        try:
            ms = self.c.client(endpoint).member_list(linearizable=False, endpoint=endpoint, timeout=2.0)
        except EtcdDrError:
            return False
        return len(ms) == 1

    def done(self, step: Step) -> bool:
        p, host = step.typed(RunParams), _host(step)
        if p.forced:
            renamed = [
                n
                for s in self.c.plan.steps
                if s.host == host and s.action == RecoveryAction.RUN
                for n in [s.typed(RunParams).forced_name]
                if n is not None
            ]
            st = self.c.members(host, p.name, *renamed)  # one look at all of them
            if any(st[n].exists for n in renamed):
                return True
            me = st[p.name]
            if not me.exists:
                return False
            if FORCE_FLAG in me.args:
                return True  # the forced member exists: never start another
            return me.running and self._one_member(p.endpoint)
        st = self.c.members(host, p.name, p.image_from)
        me = st[p.name]
        return (
            me.running
            and list(me.args) == self.expected(p, st[p.image_from])
            and me.restarts == (p.restart == "always")
        )

    def run(self, step: Step) -> None:
        p, host = step.typed(RunParams), _host(step)
        rt = self.c.runtime(host, p.name)
        st = self.c.members(host, p.name, p.image_from)
        me = st[p.name]
        if me.exists:
            if p.forced or FORCE_FLAG not in me.args:
                raise RecoveryStepError(
                    f"{host}: a {p.name} exists that this plan did not expect ({' '.join(me.args[:1])}...); "
                    "nothing started"
                )
            if p.forced_name is None:
                raise RecoveryStepError(f"{host}: step {step.id} has no name to keep the forced member under")
            # the forced member: stopped (one member, no leadership to hand over), kept aside, never
            # restarted by itself
            rt.stop(STOP_TIMEOUT_S)
            wait(
                lambda: not rt.is_running(),
                KILL_WAIT_S,
                f"forced etcd on {host} stopped",
                error=RecoveryStepError,
            )
            rt.rename(p.forced_name).set_restart(False)
        tmpl = st[p.image_from]
        rt.start_like(p.image_from, self.expected(p, tmpl), restart_always=p.restart == "always", seen=tmpl)


class WaitHealthy(Handler[Ctx]):
    """The member answers Status as the leader of a cluster of exactly `members` members."""

    def _look(self, p: WaitParams) -> tuple[bool, str]:
        """Whether it leads a cluster of p.members, and what was seen, one phrase."""
        try:
            cl = self.c.client(p.endpoint)
            if not cl.status(p.endpoint, timeout=1.0).is_leader:
                return False, "answers, but does not lead (yet)"
            n = len(cl.member_list(linearizable=False, endpoint=p.endpoint, timeout=1.0))
        except (EtcdUnavailable, EtcdTimeout) as e:
            # not listening yet (3.5 serves clients once it has a leader): dial afresh next time
            self.c.forget_client(p.endpoint)
            return False, str(e)
        except EtcdDrError as e:
            return False, str(e)
        return n == p.members, f"leads, {n} members"

    def done(self, step: Step) -> bool:
        return self._look(step.typed(WaitParams))[0]

    def run(self, step: Step) -> None:
        p = step.typed(WaitParams)
        last = ["not asked yet"]

        def leads() -> bool:
            ok, last[0] = self._look(p)
            return ok

        try:
            wait(
                leads,
                float(p.timeout_s),
                f"{step.host} leads alone",
                error=RecoveryStepError,
                poll=WAIT_POLL_S,
            )
        except RecoveryStepError as e:
            raise RecoveryStepError(f"{e} (last: {last[0]}); see the member's log on {step.host}") from e


class VerifyCluster(Handler[Ctx]):
    """One member, a probe write accepted (linearizable read of it), revision kept; keys counted."""

    def done(self, step: Step) -> bool:
        p = step.typed(VerifyParams)
        cl = self.c.client(p.endpoint)
        try:
            members = cl.member_list(linearizable=True, endpoint=p.endpoint, timeout=2.0)
            found = cl.range(p.probe_key, timeout=2.0)
            count = cl.range(b"\0", b"\0", count_only=True, timeout=2.0)
        except EtcdDrError:
            return False
        return len(members) == p.members and found.count == 1 and count.header.revision >= p.min_revision

    def run(self, step: Step) -> None:
        p = step.typed(VerifyParams)
        value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.c.client(p.endpoint).put(p.probe_key, f"recovered {value}", timeout=5.0)
        self.c.first_write_at = time.time()
        if p.count_keys:
            self.c.tally(p.endpoint)


# --- the pairing ---------------------------------------------------------------------------------

VOCABULARY: dict[RecoveryAction, tuple[type[Params], Callable[[Ctx], StepHandler]]] = {
    RecoveryAction.FENCE_CHECK: (FenceCheckParams, FenceCheck),
    RecoveryAction.FENCE_STOP: (FenceStopParams, EtcdFenceStop),
    RecoveryAction.STOP: (StopParams, EtcdStop),
    RecoveryAction.COPY_DIR: (CopyParams, CopyDir),
    RecoveryAction.COPY_FILE: (CopyParams, CopyFile),
    RecoveryAction.PUT_FILE: (PutFileParams, PutFile),
    RecoveryAction.SNAPSHOT_RESTORE: (RestoreParams, SnapshotRestore),
    RecoveryAction.SWAP_DIR: (SwapParams, SwapDir),
    RecoveryAction.RETIRE: (RetireParams, RetireMember),
    RecoveryAction.RUN: (RunParams, EtcdRun),
    RecoveryAction.WAIT_HEALTHY: (WaitParams, WaitHealthy),
    RecoveryAction.VERIFY: (VerifyParams, VerifyCluster),
}


def handlers(c: Ctx) -> dict[str, StepHandler]:
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}


def typed_plan(plan: Plan) -> Plan:
    """A recovery plan read back from JSON (the journal) with each step's action and params in
    their types. Raises ParamsError naming the step for an action or params this version does not
    know (a journal of another version)."""
    return typed_steps(plan, RecoveryAction, {a: cls for a, (cls, _) in VOCABULARY.items()}, "recovery")


__all__ = [
    "FORCE_FLAG",
    "VOCABULARY",
    "Ctx",
    "RecoveryAction",
    "RecoveryStepError",
    "handlers",
    "recovery_args",
    "typed_plan",
]
