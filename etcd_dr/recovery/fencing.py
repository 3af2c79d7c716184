"""Fencing evidence: can a voter still take part in the old cluster? Positive evidence only.

A voter counts as fenced (etcd_dr.recovery.plan.FenceKind) only when
- POWER_OFF: its power driver (inventory `power:`: the lab's power state, IPMI, or a configured
  command) says it is off;
- STOPPED: over SSH, its etcd is not running AND will not start again by itself (a container with
  restart=no, a unit not enabled): RKE's `--restart=always` container comes back at boot or when
  dockerd restarts, so a stopped one is not fenced;
- ATTESTED: an operator said so, explicitly and recorded (`--confirm-down HOST`, the approval form).
Silence (no answer on its ports, SSH timing out) is never evidence: a partitioned majority is silent
too. The partition probe (`probe`) looks for the opposite: every reachable inventory host, and this
machine, tries the voters' client and peer ports; any answer from a voter that looks lost means it
is alive. The decision is pure (etcd_dr.recovery.plan); this module gathers, in parallel, under timeouts.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import os
import re
import socket
from collections.abc import Callable, Collection, Mapping, Sequence

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EndpointStatus
from etcd_dr.executor import Executor, LocalExecutor
from etcd_dr.inventory import Host, Inventory, PowerDriver, PowerSettings, RuntimeKind
from etcd_dr.recovery.evidence import THIS_MACHINE, FenceEvidence, FenceKind, Probe, Sighting
from etcd_dr.runtime import runtime_for
from etcd_dr.state import client_for

MakeExecutor = Callable[[Host], Executor]
NO_ATTESTATIONS: Mapping[str, str] = {}


class Power(enum.StrEnum):
    OFF = "off"
    ON = "on"
    UNKNOWN = "unknown"  # the driver did not say (error, unexpected output): never evidence


def port_answers(address: str, port: int, timeout: float) -> bool:
    """A TCP connect within timeout (no TLS: the question is only whether anything listens)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def how_to_fence(inv: Inventory, host: Host) -> str:
    e = inv.etcd
    stop = (
        f"`docker update --restart=no {e.container} && docker kill {e.container}` on {host.name}"
        if e.runtime is RuntimeKind.DOCKER
        else f"disable its unit and kill its etcd process on {host.name}"
    )
    return f"stop its etcd for good ({stop}) or power {host.name} off"


# --- power drivers -------------------------------------------------------------------------------

# ipmitool -E reads the password from IPMI_PASSWORD: copied there from the variable the inventory
# names, inside the shell, so the secret is never in an argv (ps, audit log)
_IPMI = 'IPMI_PASSWORD=$(printenv -- "$1") || exit 97; export IPMI_PASSWORD; shift; exec ipmitool "$@"'


def power_state(inv: Inventory, host: Host, ps: PowerSettings, local: Executor) -> tuple[Power, str]:
    """What the host's power driver says, and one sentence saying it (no secret in it)."""
    if ps.driver is PowerDriver.LAB:
        return _lab_power(inv, host, ps)
    fill = {"host": host.name, "address": host.address}
    try:
        if ps.driver is PowerDriver.IPMI:
            env = str(ps.password_env)
            if env not in os.environ:
                return Power.UNKNOWN, (
                    f"IPMI not asked: power.password_env names {env}, which is not set in this "
                    "machine's environment; export it"
                )
            bmc = str(ps.address).format(**fill)
            argv = ["sh", "-c", _IPMI, "ipmi", env, "-I", ps.interface, "-H", bmc, "-U", str(ps.user)]
            r = local.run([*argv, "-E", "chassis", "power", "status"], check=False, timeout=ps.timeout)
            said = r.stdout.strip().lower()
            if r.ok and said.endswith(" off"):
                return Power.OFF, f"powered off (IPMI {bmc}: {r.stdout.strip()})"
            if r.ok and said.endswith(" on"):
                return Power.ON, f"power on (IPMI {bmc})"
            return Power.UNKNOWN, f"IPMI {bmc} gave no power state (exit {r.rc}: {r.stderr.strip()[-200:]})"
        argv = [a.format(**fill) for a in ps.argv]
        r = local.run(argv, check=False, timeout=ps.timeout)
        if not r.ok:
            return Power.UNKNOWN, f"`{argv[0]}` gave no power state (exit {r.rc}: {r.stderr.strip()[-200:]})"
        if re.search(str(ps.off), r.stdout):
            return Power.OFF, f"powered off (`{argv[0]}` output matches {ps.off!r})"
        return Power.ON, f"not powered off (`{argv[0]}` output does not match {ps.off!r})"
    except EtcdDrError as e:  # a timeout
        return Power.UNKNOWN, f"power driver {ps.driver} failed: {e}"


def powered_off(inv: Inventory, hosts: Sequence[str]) -> dict[str, str]:
    """The hosts whose power driver says off now (host -> its sentence), asked in parallel: for a
    look that need not dial them (state.observe's known_down)."""
    asked = [h for h in (inv.host(n) for n in hosts) if inv.power_for(h) is not None]
    if not asked:
        return {}
    local = LocalExecutor()

    def ask(h: Host) -> tuple[Power, str]:
        ps = inv.power_for(h)
        assert ps is not None
        return power_state(inv, h, ps, local)

    with cf.ThreadPoolExecutor(max_workers=len(asked)) as pool:
        said = dict(zip([h.name for h in asked], pool.map(ask, asked), strict=True))
    return {h: why for h, (power, why) in said.items() if power is Power.OFF}


def _lab_power(inv: Inventory, host: Host, ps: PowerSettings) -> tuple[Power, str]:
    """The lab's power state: a host is off when its PID 1 (recorded with its start time in the
    lab's state file) is gone, as after `etcd-dr lab power HOST off`."""
    from etcd_dr.lab import hosts
    from etcd_dr.lab.config import LabState

    d = ps.dir or inv.base_dir or (inv.source.parent if inv.source else None)
    if d is None:  # never the process's working directory: it says nothing about the lab
        return Power.UNKNOWN, "power.dir: the lab power driver needs the lab's directory; set power.dir"
    state = LabState.load(d)
    if state is None:
        return Power.UNKNOWN, f"no lab state in {d}: the lab power driver cannot tell"
    if hosts.is_up(state.hosts.get(host.name)):
        return Power.ON, "power on (the lab's power state)"
    return Power.OFF, "powered off (the lab's power state: its PID 1 is gone)"


# --- evidence ------------------------------------------------------------------------------------


def evidence_for(
    inv: Inventory,
    host: Host,
    make: MakeExecutor,
    attested_by: str | None = None,
    local: Executor | None = None,
) -> FenceEvidence:
    """Power first (it needs no answer from the host), then the etcd runtime over SSH, then the
    operator's attestation; the first positive evidence wins."""
    notes: list[str] = []
    ps = inv.power_for(host)
    if ps is not None:
        power, why = power_state(inv, host, ps, local or LocalExecutor())
        if power is Power.OFF:
            return FenceEvidence(host.name, FenceKind.POWER_OFF, why)
        notes.append(why)
    else:
        notes.append("no power driver (inventory `power:`)")
    what = f"container {inv.etcd.container}" if inv.etcd.runtime is RuntimeKind.DOCKER else "etcd unit"
    ex = None
    try:
        ex = make(host)
        rt = runtime_for(inv, ex, host=host)
        running = rt.is_running()
        restarts = (rt.restarts() if rt.exists() else False) if not running else True
        own = asked_on_host(inv, host, ex) if running else None
    except EtcdDrError as err:
        notes.append(f"its etcd could not be checked over SSH ({err})")
        running = restarts = own = None
    finally:
        if ex is not None:
            ex.close()
    if running is False and restarts is False:
        return FenceEvidence(
            host.name, FenceKind.STOPPED, f"its {what} is not running and does not restart (checked over SSH)"
        )
    if running and own is not None:
        if isinstance(own, EndpointStatus):
            term = f"term {own.raft_term}, raft index {own.raft_index}"
            if own.leader:
                return FenceEvidence(
                    host.name,
                    FenceKind.ALIVE,
                    f"its etcd runs and, asked on {host.name} itself, follows leader {own.leader:x} "
                    f"({term}): alive in a cluster that may accept writes",
                )
            return FenceEvidence(
                host.name,
                FenceKind.TO_STOP,
                f"its {what} runs but, asked on {host.name} itself, knows no leader ({term}): the plan "
                "stops it for good first",
            )
        notes.append(f"its {what} runs (checked over SSH) but its etcd did not answer on {host.name} ({own})")
    elif running:
        notes.append(f"its {what} runs (checked over SSH)")
    elif running is False:
        again = "restart=always" if inv.etcd.runtime is RuntimeKind.DOCKER else "its unit is enabled"
        notes.append(f"its {what} is stopped but {again} starts it again (boot, dockerd restart)")
    ev = FenceEvidence(host.name, FenceKind.NONE, f"{'; '.join(notes)}; {how_to_fence(inv, host)}")
    return attest(ev, attested_by) if attested_by else ev


def asked_on_host(inv: Inventory, host: Host, ex: Executor) -> EndpointStatus | str:
    """The member's etcd asked for its status the way its own host reaches it (through an SSH tunnel
    to its client URL, with this machine's client certificate): the status, or why there is none.
    Seen from its host, a voter cut off from everyone else still answers, and says whether it knows
    a leader."""
    e = inv.etcd
    try:
        with ex.tunnel(host.address, e.client_port) as (addr, port):
            url = f"https://{addr}:{port}"
            with client_for(inv, [url], server_names={url: host.address}) as c:
                return c.status(url, timeout=e.dial_timeout + 1)
    except EtcdDrError as err:
        return str(err).split("\n")[0][:200]


def attest(ev: FenceEvidence, by: str) -> FenceEvidence:
    """An operator's attestation on top of the evidence: it counts only where nothing better was
    found (power off or etcd stopped stay what they are, a voter this plan stops is stopped, and
    one that follows a leader is alive whatever anyone says)."""
    if ev.settled or ev.kind is FenceKind.ALIVE:
        return ev
    seen = ev.how.split("; stop its etcd for good")[0]  # what was found, without the advice
    return FenceEvidence(ev.host, FenceKind.ATTESTED, f"attested down by {by}, not verified ({seen})", by=by)


def _default_factory(inv: Inventory) -> MakeExecutor:
    from etcd_dr.executor import audit_log_for, executor_for

    audit = audit_log_for(inv)
    return lambda h: executor_for(inv, h, audit=audit)


def gather(
    inv: Inventory,
    hosts: Sequence[str],
    *,
    executor_factory: MakeExecutor | None = None,
    attested: Mapping[str, str] = NO_ATTESTATIONS,
    off: Mapping[str, str] = NO_ATTESTATIONS,
) -> dict[str, FenceEvidence]:
    """Evidence for each named host, gathered in parallel. `attested`: host -> who attested it down.
    `off`: host -> the sentence its power driver said "off" with just now (powered_off()), taken as
    that evidence instead of asking the driver twice."""
    make = executor_factory or _default_factory(inv)
    targets = [inv.host(h) for h in hosts]
    if not targets:
        return {}
    from etcd_dr.executor import audit_log_for

    local = LocalExecutor(audit=audit_log_for(inv))

    def one(h: Host) -> FenceEvidence:
        if h.name in off:
            return FenceEvidence(h.name, FenceKind.POWER_OFF, off[h.name])
        return evidence_for(inv, h, make, attested.get(h.name), local)

    with cf.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = {h.name: pool.submit(one, h) for h in targets}
        return {name: f.result() for name, f in futures.items()}


# --- the partition probe -------------------------------------------------------------------------

# every ADDR,PORT at once, each bounded by the timeout; prints those that accepted a connection
_PROBE = """command -v bash >/dev/null && command -v timeout >/dev/null || exit 97
t=$1; shift
for a in "$@"; do
  ( timeout "$t" bash -c ': <"/dev/tcp/$1/$2"' probe "${a%,*}" "${a##*,}" 2>/dev/null && echo "$a" ) &
done
wait
"""


def probe(
    inv: Inventory,
    targets: Sequence[str],
    *,
    executor_factory: MakeExecutor | None = None,
    timeout: float | None = None,
    off: Collection[str] = (),
) -> Probe:
    """Every inventory host that answers SSH, and this machine, try each target's client and peer
    ports, all in parallel: a probe costs about one dial timeout (plus an SSH connect). A host that
    cannot be reached or cannot probe (no bash/timeout) is left out of `probers`; so is one in
    `off` (its power driver said off just now), without an SSH connect timeout spent on it.
    Its ports are still dialed: a host seen although its driver says off is a partition."""
    make = executor_factory or _default_factory(inv)
    t = inv.etcd.dial_timeout if timeout is None else timeout
    voters = [inv.host(h) for h in targets]
    ports = (inv.etcd.client_port, inv.etcd.peer_port)
    pairs = {f"{v.address},{p}": (v.name, p) for v in voters for p in ports}

    def here() -> list[Sighting] | None:
        with cf.ThreadPoolExecutor(max_workers=max(1, len(pairs))) as pool:
            got = list(pool.map(lambda k: port_answers(k.split(",")[0], int(k.split(",")[1]), t), pairs))
        return [Sighting(THIS_MACHINE, *pairs[k]) for k, ok in zip(pairs, got, strict=True) if ok]

    def there(h: Host) -> list[Sighting] | None:
        mine = [k for k, (name, _) in pairs.items() if name != h.name]
        if not mine:
            return []
        ex = None
        try:
            ex = make(h)
            r = ex.run(["sh", "-c", _PROBE, "probe", f"{t:g}", *mine], check=False, timeout=t + 10)
        except EtcdDrError:
            return None  # not reachable: it saw nothing we can know of
        finally:
            if ex is not None:
                ex.close()
        if not r.ok:
            return None
        return [Sighting(h.name, *pairs[k]) for k in r.stdout.split() if k in pairs]

    if not pairs:
        return Probe()
    with cf.ThreadPoolExecutor(max_workers=len(inv.hosts) + 1) as pool:
        askers = [h for h in inv.hosts if h.name not in off]
        jobs = {THIS_MACHINE: pool.submit(here), **{h.name: pool.submit(there, h) for h in askers}}
        results = {name: f.result() for name, f in jobs.items()}
    probers = tuple(n for n, r in results.items() if r is not None)
    return Probe(probers, tuple(s for r in results.values() if r for s in r))
