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
class WaitMemberParams(HealParams):
    endpoint: str
    timeout_s: int


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
    if not inv.rehearsal:
        where = inv.source or "the inventory"
        return _refused(
            inv,
            f"cluster {inv.cluster} is not marked for rehearsal ({where} has rehearsal: false); "
            "set `rehearsal: true` only in the inventory of a cluster meant for drills",
        ), None
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
