"""Fault injection for rehearsals, decided as plans: kill a master (power, etcd, network) and heal it.

`plan_fault()` and `plan_heal()` are pure. A fault is refused (nothing changed) unless the inventory
says `rehearsal: true`, and on any host that is not an etcd voter. Where the fault lands:

- the lab (the inventory is the one `etcd-dr lab up` wrote for a lab that is up): its own controls,
  power = cable out + every process of the host killed at once, network = cable out; etcd = the
  member's container or process killed;
- real hosts, over SSH: etcd = the container/process killed (a kill, not `docker stop`: a leader
  whose peers are gone stalls the full stop timeout), network = iptables rules dropping the client
  and peer ports, tagged with a comment so heal removes exactly those, power = `systemctl poweroff`
  only with an explicit flag, and it cannot be healed remotely.

Every injected fault is a `FaultRecord` in a small ledger beside the audit log, written before the
fault is carried out, so `fault heal` knows what to undo even after a crash half way.
"""

from __future__ import annotations

import datetime as dt
import enum
import fcntl
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.inventory import Host, Inventory
from etcd_dr.plans import Params, Plan, Refusal, Step
from etcd_dr.runtime import MemberParams

FAULT_KIND = "fault"
HEAL_KIND = "fault-heal"
TAG_PREFIX = "etcd-dr-fault-"
HEAL_WAIT_S = 90  # a member rejoining after a power loss: boot, dockerd, election (2 cores)


class FaultMode(enum.StrEnum):
    POWER = "power"  # the whole host goes away at once
    ETCD = "etcd"  # only the etcd member dies; the host (sshd) stays
    NETWORK = "network"  # the host keeps running, cut off from its peers and clients
    # host faults of the source incident's last hours (`fault orphan-sandbox`, `fault cert-not-yet-valid`)
    ORPHAN_SANDBOX = "orphan-sandbox"  # a container labelled with a sandbox that does not exist
    CERT_NOT_YET_VALID = "cert-not-yet-valid"  # a member certificate dated hours ahead


KILL_MODES = (FaultMode.POWER, FaultMode.ETCD, FaultMode.NETWORK)  # `fault kill-master --mode`
FAULT_LABEL = "etcd-dr.fault"  # on the orphan container: heal removes exactly the fault's own


class Via(enum.StrEnum):
    LAB = "lab"  # the lab's power and link controls
    SSH = "ssh"  # a real host, over SSH


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault, as the ledger keeps it until it is healed."""

    id: str  # <host>-<mode>-<UTC stamp>: unique per injection
    cluster: str
    host: str
    mode: FaultMode
    via: Via
    injected_at: str  # ISO 8601, UTC
    reason: str  # the plan's sentence
    reversible: bool  # False: a real host powered off (no remote way back)

    @property
    def tag(self) -> str:
        """The comment on this fault's iptables rules: heal removes exactly the rules carrying it."""
        return TAG_PREFIX + self.id

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "mode": str(self.mode), "via": str(self.via)}

    @classmethod
    def from_json(cls, d: dict) -> FaultRecord:
        return cls(**{**d, "mode": FaultMode(d["mode"]), "via": Via(d["via"])})


# --- the step vocabulary: actions and their params ------------------------------------------------
# (the handlers are in etcd_dr.faults.steps, paired in its VOCABULARY: it runs inject/heal, which
# plan with this module, so the params live with the planner until the layout gives each its room)


class FaultAction(enum.StrEnum):
    LAB_POWER_OFF = "lab-power-off"
    LAB_POWER_ON = "lab-power-on"
    LAB_UNPLUG = "lab-unplug"
    LAB_PLUG = "lab-plug"
    ETCD_KILL = "etcd-kill"
    ETCD_START = "etcd-start"
    IPTABLES_DROP = "iptables-drop"
    IPTABLES_UNDROP = "iptables-undrop"
    POWEROFF = "poweroff"
    AWAIT_POWER_ON = "await-power-on"
    WAIT_MEMBER = "wait-member"
    CREATE_ORPHAN = "create-orphan"
    KUBELET_INTO_LOOP = "kubelet-into-loop"
    REMOVE_ORPHAN = "remove-orphan"
    KUBELET_SETTLE = "kubelet-settle"
    CERT_AHEAD = "cert-ahead"
    MEMBER_RESTART = "member-restart"
    CERT_RESTORE = "cert-restore"


@dataclass(frozen=True)
class TargetParams(Params):
    """The host's address and etcd client port: a fault is in place when nothing answers there."""

    address: str
    port: int


@dataclass(frozen=True)
class PowerOffParams(TargetParams):
    argv: tuple[str, ...]


@dataclass(frozen=True)
class KillParams(TargetParams, MemberParams):
    pass


@dataclass(frozen=True)
class DropParams(TargetParams):
    tag: str
    rules: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class HealParams(TargetParams):
    fault: str  # the FaultRecord id this step heals


@dataclass(frozen=True)
class StartParams(HealParams, MemberParams):
    pass


@dataclass(frozen=True)
class UndropParams(HealParams):
    tag: str
    iptables: str


@dataclass(frozen=True)
class OrphanHealParams(HealParams):
    kubelet: str


@dataclass(frozen=True)
class CertRestoreParams(HealParams, MemberParams):
    cert: str
    key: str
    kept_suffix: str


@dataclass(frozen=True)
class WaitMemberParams(HealParams):
    endpoint: str
    timeout_s: int


@dataclass(frozen=True)
class OrphanParams(Params):
    """A container labelled with a sandbox id that no sandbox has, and this fault's own label."""

    fault: str
    name: str
    sandbox_id: str
    kubelet: str  # kubelet's container: the orphan is made from its image (every node has it)


@dataclass(frozen=True)
class KubeletParams(Params):
    fault: str
    kubelet: str
    sandbox_id: str
    wait_s: float


@dataclass(frozen=True)
class CertAheadParams(MemberParams):
    fault: str
    cert: str
    key: str
    kept_suffix: str  # the old pair is kept as <path>.<kept_suffix> (never deleted)
    hours: float  # NotBefore this far ahead of the host's clock
    ips: tuple[str, ...]
    dns: tuple[str, ...]
    address: str
    port: int


# --- planning (pure) -----------------------------------------------------------------------------


def fault_id(host: str, mode: FaultMode, now: dt.datetime) -> str:
    return f"{host}-{mode}-{now.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def _refused(inv: Inventory, why: str) -> Plan:
    # every refusal is about the request or the inventory (not marked for rehearsal, not a voter,
    # a fault active there already, a flag missing): bad input
    return Plan(FAULT_KIND, inv.cluster, f"fault injection refused: {why}", refusal=Refusal.BAD_INPUT)


def _iptables(host: Host) -> str:
    return "ip6tables" if ":" in host.address else "iptables"


def iptables_rules(inv: Inventory, host: Host, tag: str) -> list[list[str]]:
    """The rules of a network cut: nothing reaches the client or peer port from outside, and the member
    reaches no peer. Loopback stays open, as in a real cable cut. -w: wait for the xtables lock."""
    ipt, e = _iptables(host), inv.etcd
    mark = ["-m", "comment", "--comment", tag, "-j", "DROP"]
    return [
        [ipt, "-w", "5", "-I", "INPUT", "!", "-i", "lo", "-p", "tcp", "-m", "multiport",
         "--dports", f"{e.client_port},{e.peer_port}", *mark],
        [ipt, "-w", "5", "-I", "OUTPUT", "!", "-o", "lo", "-p", "tcp", "--dport", str(e.peer_port), *mark],
    ]  # fmt: skip


def plan_fault(
    inv: Inventory,
    host: str,
    mode: FaultMode,
    *,
    via: Via,
    now: dt.datetime,
    active: Sequence[FaultRecord] = (),
    power_off_real_host: bool = False,
) -> tuple[Plan, FaultRecord | None]:
    """The plan that injects the fault, and the ledger record it leaves (None when refused). Raises
    InputError for a host the inventory does not know."""
    h = inv.host(host)
    if mode not in KILL_MODES:
        raise InputError(
            f"--mode {mode}: kill-master takes {', '.join(KILL_MODES)}; {mode} is a fault of its own"
        )
    if (no := _not_for_rehearsal(inv)) is not None:
        return no, None
    if not h.is_voter:
        roles = ", ".join(sorted(str(r) for r in h.roles)) or "none"
        voters = ", ".join(v.name for v in inv.voters)
        return _refused(
            inv, f"{host} is not an etcd voter (roles: {roles}); kill-master takes one of {voters}"
        ), None
    mine = [f for f in active if f.host == host]
    if mine:
        f = mine[0]
        return _refused(
            inv,
            f"{host} already has an active fault ({f.mode}, injected {f.injected_at}); "
            f"run `etcd-dr fault heal --host {host}` first",
        ), None
    if via is Via.SSH and mode is FaultMode.POWER and not power_off_real_host:
        return _refused(
            inv,
            f"--mode power on a real host runs `systemctl poweroff` on {host}, which cannot be undone "
            "remotely; pass --power-off-real-host to mean it, or use --mode etcd or --mode network",
        ), None
    rec_id = fault_id(host, mode, now)
    port = inv.etcd.client_port
    heal = f"`etcd-dr fault heal --host {host}` undoes it"
    target = TargetParams(address=h.address, port=port)
    step: Step
    if mode is FaultMode.POWER and via is Via.LAB:
        what = "power loss (cable out, every process of the host killed at once)"
        step = Step(
            id=f"power-off:{host}",
            action=FaultAction.LAB_POWER_OFF,
            host=host,
            description=f"power {host} off: cable out, then every process of the host killed at once",
            postcondition=f"{host} does not answer on {port}; it is powered off",
            reason="a lost master is a host that vanishes mid-write, with no chance to say goodbye",
            destructive=True,
            params=target,
        )
    elif mode is FaultMode.POWER:
        what = "power off (`systemctl poweroff`, or `poweroff -f` without systemd)"
        heal = f"it cannot be healed remotely: power {host} on at its console (IPMI, hypervisor)"
        step = Step(
            id=f"poweroff:{host}",
            action=FaultAction.POWEROFF,
            host=host,
            description=f"power {host} off with `systemctl poweroff` (`poweroff -f` without systemd)",
            postcondition=f"{host} does not answer on {port}, nor over SSH",
            reason="--power-off-real-host asked for a real power loss",
            destructive=True,
            params=PowerOffParams(h.address, port, ("sh", "-c", "systemctl poweroff || poweroff -f")),
        )
    elif mode is FaultMode.ETCD:
        what = "etcd killed (the host stays up)"
        step = Step(
            id=f"kill-etcd:{host}",
            action=FaultAction.ETCD_KILL,
            host=host,
            description=f"kill etcd on {host} (kill, not stop: a leader would stall 10 s on a stop)",
            postcondition=f"{host} does not answer on {port}; etcd on it is not running",
            reason="a member that dies alone is the commonest loss; its host and sshd stay up",
            destructive=True,
            params=KillParams(address=h.address, port=port, **MemberParams.fields_of(inv, h)),
        )
    elif via is Via.LAB:
        what = "network cut (cable out)"
        step = Step(
            id=f"unplug:{host}",
            action=FaultAction.LAB_UNPLUG,
            host=host,
            description=f"pull {host}'s network cable",
            postcondition=f"{host} does not answer on {port}; its link is down",
            reason="a partition: the host keeps running, cut off from its peers",
            destructive=True,
            params=target,
        )
    else:
        what = f"network cut (iptables drops {port}/{inv.etcd.peer_port}, tagged {TAG_PREFIX}{rec_id})"
        step = Step(
            id=f"cut-etcd-ports:{host}",
            action=FaultAction.IPTABLES_DROP,
            host=host,
            description=f"drop {port}/{inv.etcd.peer_port} on {host} with iptables rules tagged "
            f"{TAG_PREFIX}{rec_id}",
            postcondition=f"{host} does not answer on {port}; both tagged rules are in place",
            reason="a partition: the host keeps running and answers SSH, its etcd is cut off",
            destructive=True,
            params=DropParams(
                h.address,
                port,
                tag=TAG_PREFIX + rec_id,
                rules=tuple(tuple(r) for r in iptables_rules(inv, h, TAG_PREFIX + rec_id)),
            ),
        )
    reason = f"rehearsal fault on {inv.cluster}: {what} of voter {host} via {via}; {heal}"
    rec = FaultRecord(
        id=rec_id,
        cluster=inv.cluster,
        host=host,
        mode=mode,
        via=via,
        injected_at=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        reason=reason,
        reversible=not (via is Via.SSH and mode is FaultMode.POWER),
    )
    return Plan(kind=FAULT_KIND, cluster=inv.cluster, reason=reason, steps=(step,)), rec


def _not_for_rehearsal(inv: Inventory) -> Plan | None:
    if inv.rehearsal:
        return None
    where = inv.source or "the inventory"
    return _refused(
        inv,
        f"cluster {inv.cluster} is not marked for rehearsal ({where} has rehearsal: false); "
        "set `rehearsal: true` only in the inventory of a cluster meant for drills",
    )


def _record(
    inv: Inventory, host: str, mode: FaultMode, via: Via, now: dt.datetime, reason: str
) -> FaultRecord:
    return FaultRecord(
        id=fault_id(host, mode, now),
        cluster=inv.cluster,
        host=host,
        mode=mode,
        via=via,
        injected_at=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        reason=reason,
        reversible=True,
    )


def plan_orphan_sandbox(
    inv: Inventory,
    host: str,
    *,
    via: Via,
    now: dt.datetime,
    sandbox_id: str,
    active: Sequence[FaultRecord] = (),
    kubelet: str = "kubelet",
    wait_s: float = 30.0,
) -> tuple[Plan, FaultRecord | None]:
    """A real container on `host` labelled io.kubernetes.sandbox.id=<sandbox_id> (an id no sandbox
    has: the caller draws it at random), then kubelet restarted into the loop it causes."""
    inv.host(host)
    if (no := _not_for_rehearsal(inv)) is not None:
        return no, None
    if busy := _busy(inv, host, active):
        return busy, None
    fid = fault_id(host, FaultMode.ORPHAN_SANDBOX, now)
    name = f"k8s_etcd-dr-orphan_{sandbox_id[:12]}"
    reason = (
        f"rehearsal fault on {inv.cluster}: container {name} on {host} labelled io.kubernetes.sandbox.id="
        f"{sandbox_id[:12]}..., a sandbox that does not exist, and kubelet restarted into its loop "
        f"(kubernetes/kubelet#21); `etcd-dr hosts kubelet-cleanup --host {host}` repairs it, "
        f"`etcd-dr fault heal --host {host}` undoes it"
    )
    steps = (
        Step(
            f"create-orphan:{host}", FaultAction.CREATE_ORPHAN, host,
            f"create container {name} on {host} labelled with sandbox {sandbox_id[:12]}... (none exists)",
            f"a container labelled {FAULT_LABEL}={fid} exists on {host}",
            "the source incident's leftover: a container whose pod sandbox is gone", destructive=True,
            params=OrphanParams(fid, name, sandbox_id, kubelet),
        ),
        Step(
            f"kubelet-into-loop:{host}", FaultAction.KUBELET_INTO_LOOP, host,
            f"restart kubelet on {host}: it reads the runtime's containers at start",
            f"kubelet's log on {host} says no PodsandBox found with Id '{sandbox_id[:12]}...'",
            "kubelet fails only at its next start", destructive=True,
            params=KubeletParams(fid, kubelet, sandbox_id, wait_s),
        ),
    )  # fmt: skip
    return Plan(FAULT_KIND, inv.cluster, reason, steps), _record(
        inv, host, FaultMode.ORPHAN_SANDBOX, via, now, reason
    )


def plan_cert_not_yet_valid(
    inv: Inventory,
    host: str,
    *,
    via: Via,
    now: dt.datetime,
    ips: Sequence[str],
    dns: Sequence[str],
    hours: float = 8.0,
    active: Sequence[FaultRecord] = (),
) -> tuple[Plan, FaultRecord | None]:
    """The member's certificate reissued by kube-ca with NotBefore `hours` ahead of the host's clock
    (as a machine whose clock is ahead would issue it), the old pair kept beside it, and the member
    restarted so that it serves it: its peers refuse it with Go's x509 error."""
    h = inv.host(host)
    if (no := _not_for_rehearsal(inv)) is not None:
        return no, None
    if not h.runs_etcd:
        members = ", ".join(x.name for x in inv.etcd_hosts)
        return _refused(inv, f"{host} runs no etcd member; cert-not-yet-valid takes one of {members}"), None
    if busy := _busy(inv, host, active):
        return busy, None
    if not 0 < hours <= 24 * 365:
        raise InputError(f"--hours {hours:g}: give how far ahead NotBefore is, e.g. 8 (0 < hours <= 8760)")
    fid = fault_id(host, FaultMode.CERT_NOT_YET_VALID, now)
    e, port = inv.etcd, inv.etcd.client_port
    p = CertAheadParams(
        **MemberParams.fields_of(inv, h), fault=fid, cert=e.cert_path(h), key=e.key_path(h),
        kept_suffix=f"before-{fid}", hours=hours, ips=tuple(ips), dns=tuple(dns), address=h.address,
        port=port,
    )  # fmt: skip
    reason = (
        f"rehearsal fault on {inv.cluster}: {host}'s member certificate reissued by kube-ca with NotBefore "
        f"{hours:g} h ahead of {host}'s clock (the old pair kept as *.{p.kept_suffix}) and etcd restarted: "
        f"its peers refuse it (x509: certificate has expired or is not yet valid); `etcd-dr hosts clock` "
        f"finds it, `etcd-dr fault heal --host {host}` undoes it"
    )
    steps = (
        Step(
            f"cert-ahead:{host}", FaultAction.CERT_AHEAD, host,
            f"reissue {host}'s member certificate with NotBefore {hours:g} h ahead of its clock",
            f"{p.cert} on {host} is not yet valid on {host}'s clock",
            "a certificate issued on a machine whose clock was hours ahead", destructive=True, params=p,
        ),
        Step(
            f"member-restart:{host}", FaultAction.MEMBER_RESTART, host,
            f"restart etcd on {host} so that it serves the new certificate",
            f"etcd on {host} runs, started after its certificate was replaced",
            "etcd reads its certificate at start",
            destructive=True, params=p,
        ),
    )  # fmt: skip
    return Plan(FAULT_KIND, inv.cluster, reason, steps), _record(
        inv, host, FaultMode.CERT_NOT_YET_VALID, via, now, reason
    )


def _busy(inv: Inventory, host: str, active: Sequence[FaultRecord]) -> Plan | None:
    mine = [f for f in active if f.host == host]
    if not mine:
        return None
    f = mine[0]
    return _refused(
        inv,
        f"{host} already has an active fault ({f.mode}, injected {f.injected_at}); "
        f"run `etcd-dr fault heal --host {host}` first",
    )


def plan_heal(inv: Inventory, faults: Sequence[FaultRecord], *, wait: bool = True) -> Plan:
    """Undo every fault, then wait for each member to answer again with a leader. All undo steps come
    first: a member cannot find a leader until a majority is back. wait=False only undoes: after a
    recovery the returning member is refused (or set aside) by design and `etcd-dr rejoin` brings
    it back, so it would never answer with a leader."""
    if not faults:
        return Plan(kind=HEAL_KIND, cluster=inv.cluster, reason="no active fault: nothing to heal")
    A = FaultAction
    undo: list[Step] = []
    waits: list[Step] = []
    for f in faults:
        h = inv.host(f.host)
        common = HealParams(address=h.address, port=inv.etcd.client_port, fault=f.id)
        at = {"address": h.address, "port": inv.etcd.client_port, "fault": f.id}
        if f.via is Via.LAB and f.mode is FaultMode.POWER:
            undo.append(
                Step(f"power-on:{f.host}", A.LAB_POWER_ON, f.host, f"power {f.host} on (boot on its disk, "
                     "cable in)", f"{f.host} is on and answers SSH", "undo the power loss", params=common)
            )  # fmt: skip
        elif f.via is Via.LAB and f.mode is FaultMode.NETWORK:
            undo.append(
                Step(f"plug:{f.host}", A.LAB_PLUG, f.host, f"plug {f.host}'s cable back in",
                     f"{f.host}'s link is up", "undo the network cut", params=common)
            )  # fmt: skip
        elif f.mode is FaultMode.ETCD:
            undo.append(
                Step(f"start-etcd:{f.host}", A.ETCD_START, f.host, f"start etcd on {f.host} again "
                     "(same container/unit, same arguments)", f"etcd on {f.host} is running",
                     "undo the kill", params=StartParams(**at, **MemberParams.fields_of(inv, h)))
            )  # fmt: skip
        elif f.mode is FaultMode.ORPHAN_SANDBOX:
            undo += [
                Step(f"remove-orphan:{f.host}", A.REMOVE_ORPHAN, f.host, f"remove the container labelled "
                     f"{FAULT_LABEL}={f.id} on {f.host} (if kubelet-cleanup has not already)",
                     f"no container on {f.host} is labelled {FAULT_LABEL}={f.id}",
                     "undo the orphan: exactly the container this fault made",
                     params=OrphanHealParams(**at, kubelet="kubelet")),
                Step(f"kubelet-settle:{f.host}", A.KUBELET_SETTLE, f.host, f"restart kubelet on {f.host} "
                     "unless it already runs steadily",
                     f"kubelet on {f.host} runs without the sandbox failure",
                     "kubelet leaves its loop only at a start",
                     params=OrphanHealParams(**at, kubelet="kubelet")),
            ]  # fmt: skip
            continue  # no etcd member to wait for
        elif f.mode is FaultMode.CERT_NOT_YET_VALID:
            e = inv.etcd
            undo.append(
                Step(f"cert-restore:{f.host}", A.CERT_RESTORE, f.host, f"put {f.host}'s kept member "
                     "certificate back (the fault's moved aside) and restart etcd, unless the one there "
                     f"is valid on {f.host}'s clock (renewed since)", f"{e.cert_path(h)} on {f.host} is "
                     f"valid on {f.host}'s clock and etcd runs", "undo the certificate dated ahead",
                     params=CertRestoreParams(**at, **MemberParams.fields_of(inv, h), cert=e.cert_path(h),
                                              key=e.key_path(h), kept_suffix=f"before-{f.id}"))
            )  # fmt: skip
        elif f.mode is FaultMode.NETWORK:
            undo.append(
                Step(f"uncut-etcd-ports:{f.host}", A.IPTABLES_UNDROP, f.host, f"remove the iptables rules "
                     f"tagged {f.tag} on {f.host}", f"no rule tagged {f.tag} is left on {f.host}",
                     "undo the network cut: exactly the rules this fault added",
                     params=UndropParams(**at, tag=f.tag, iptables=_iptables(h)))
            )  # fmt: skip
        else:
            undo.append(
                Step(f"await-power-on:{f.host}", A.AWAIT_POWER_ON, f.host, f"wait for {f.host} to be "
                     "powered on at its console", f"{f.host} answers SSH", "a powered-off real host "
                     "cannot be healed remotely: someone powers it on", params=common)
            )  # fmt: skip
        waits.append(
            Step(
                f"wait-member:{f.host}",
                FaultAction.WAIT_MEMBER,
                f.host,
                f"wait until etcd on {f.host} answers and follows a leader",
                f"{f.host} answers a linearizable read on {inv.etcd.client_port} (it has a leader)",
                "the fault is healed when the member is back in the cluster",
                params=WaitMemberParams(**at, endpoint=inv.client_url(h), timeout_s=HEAL_WAIT_S),
            )
        )
    hosts = ", ".join(f"{f.host} ({f.mode})" for f in faults)
    no_wait = "" if wait else " (not waiting for the members: they rejoin separately)"
    return Plan(
        kind=HEAL_KIND,
        cluster=inv.cluster,
        reason=f"heal {len(faults)} active fault{'s' if len(faults) != 1 else ''}: {hosts}{no_wait}",
        steps=(*undo, *waits) if wait else tuple(undo),
    )


# --- the ledger ----------------------------------------------------------------------------------


class FaultLedger:
    """`faults-<cluster>.json` beside the audit log: the faults injected and not yet healed. Writers
    serialize with flock; the file is replaced atomically."""

    def __init__(self, path: Path, cluster: str) -> None:
        self.path = path
        self.cluster = cluster

    @classmethod
    def for_inventory(cls, inv: Inventory) -> FaultLedger:
        if inv.audit_log is None:
            raise InputError(
                "audit_log: fault injection needs an audit log (every fault is recorded, and the fault "
                "ledger lives beside it); set audit_log in the inventory"
            )
        return cls(inv.state_path(f"faults-{inv.cluster}.json"), inv.cluster)

    def active(self) -> list[FaultRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise InputError(f"{self.path}: fault ledger unreadable ({e}); fix or move it aside") from e
        return [FaultRecord.from_json(d) for d in data.get("faults", []) if d.get("cluster") == self.cluster]

    def _change(self, fn: Callable[[list[FaultRecord]], list[FaultRecord]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            recs = fn(self.active())
            tmp = self.path.with_name(self.path.name + ".part")
            body = {"cluster": self.cluster, "faults": [r.to_json() for r in recs]}
            tmp.write_text(json.dumps(body, indent=2) + "\n")
            tmp.replace(self.path)
        finally:
            os.close(fd)

    def add(self, rec: FaultRecord) -> None:
        self._change(lambda recs: [*(r for r in recs if r.id != rec.id), rec])

    def remove(self, ids: Sequence[str]) -> None:
        self._change(lambda recs: [r for r in recs if r.id not in set(ids)])
