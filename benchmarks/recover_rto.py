"""RTO of `etcd-dr recover --yes` against a hand-written shell runbook doing the minimal same steps,
on the lab with RKE's timings (500/5000 ms), alternating in one run (issue #4's benchmark).

Scenarios:
  masters-lost     master1 and master2 lose power; master3 (a voter) is forced into a one-member
                   cluster once and recreated without the flag (benchmarks/runbook_masters_lost.sh)
  all-voters-lost  master1..3 (etcd 3.4) lose power; the 3.5 learner on node1 is restored from its
                   own db into a one-member cluster (benchmarks/runbook_all_voters_lost.sh)

Each round runs both recoveries of each scenario, the order of hand script and etcd-dr alternating
from round to round, each on a lab built afresh (`lifecycle.up`): 2000 keys written, the learner
caught up, the hosts powered off, and at once the recovery started in a subprocess: the runbook
over the lab's ssh (it is told the survivor), or `etcd-dr recover --yes --json` (told nothing). A
probe in this process writes to the survivor's client endpoint every 0.1 s from the power loss on
(a fresh connection after each failure, so gRPC's reconnect backoff never delays it), the same
probe for both, until 3 s of writes were accepted after the recovery exited.

  RTO          power loss -> writes accepted for good: the probe's first acknowledged write after
               its last failed one (the recovered member, not an interim one)
  first write  power loss -> the probe's first acknowledged write at all (on the force-new-cluster
               path the forced member accepts writes before it is recreated without the flag)
  election     the recovered member's own election, the last wait of both (a random draw from the
               same range for both tools, most of a run's spread), and the RTO without it

A run counts only if the recovered member is alone in its member list, holds all 2000 keys and every
probe write it acknowledged, and its container runs without --force-new-cluster with
restart=always. A benchmark: it prints figures and asserts nothing about speed. Needs root. With
--json, stdout is one JSON object and the tables go to stderr. FORCED_FLAGS in the environment
reaches the masters-lost runbook's forced run (a side measurement; unset: the literal runbook).

    .venv/bin/python benchmarks/recover_rto.py --rounds 5
    .venv/bin/python benchmarks/recover_rto.py --rounds 1 --scenarios masters-lost --json > rto.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.lab.config import EtcdSeries, LabConfig, LabState, default_lab_dir
from etcd_dr.state import client_for

HERE = Path(__file__).resolve().parent
KEYS = 2000
KEY_PREFIX = "/bench/"
PROBE_PREFIX = "/bench-probe/"
PROBE_PERIOD_S = 0.1
SETTLE_S = 3.0  # accepted writes after the recovery exited before a run's RTO is final
RECOVERY_TIMEOUT_S = 300.0
TARGET_RATIO = 1.5  # issue 9's goal
TOOLS = ("hand", "etcd-dr")
BEFORE = "before"  # --baseline REF: etcd-dr of that git ref, run beside this tree's in the same rounds


@dataclass(frozen=True)
class Scenario:
    name: str
    lost: tuple[str, ...]
    survivor: str
    runbook: str
    path: str  # the path etcd-dr must take
    learner: EtcdSeries | None = None


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "masters-lost", ("master1", "master2"), "master3", "runbook_masters_lost.sh", "force-new-cluster"
        ),
        Scenario(
            "all-voters-lost",
            ("master1", "master2", "master3"),
            "node1",
            "runbook_all_voters_lost.sh",
            "learner-restore",
            learner=EtcdSeries.V3_5,
        ),
    )
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the probe -----------------------------------------------------------------------------------


@dataclass
class Attempt:
    start: float  # epoch seconds
    end: float
    ok: bool
    key: str
    error: str = ""


class Probe(threading.Thread):
    """Puts to one endpoint every PROBE_PERIOD_S; each attempt is one Put (1 s deadline, etcd's
    hasleader metadata: a member that knows it has no leader refuses at once)."""

    def __init__(self, inv: Inventory, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.inv, self.endpoint = inv, endpoint
        self.attempts: list[Attempt] = []
        self.stop_event = threading.Event()

    def _client(self) -> EtcdClient:
        e = self.inv.etcd
        return EtcdClient(
            [self.endpoint],
            ca_cert=e.client.ca_cert,
            cert=e.client.cert,
            key=e.client.key,
            dial_timeout=0.5,
            request_timeout=1.0,
        )

    def run(self) -> None:
        client: EtcdClient | None = None
        n = 0
        while not self.stop_event.is_set():
            t0 = time.time()
            key = f"{PROBE_PREFIX}{n:06d}"
            n += 1
            try:
                client = client or self._client()
                client.put(key, f"{t0:.3f}", timeout=1.0)
                self.attempts.append(Attempt(t0, time.time(), True, key))
            except EtcdDrError as err:
                self.attempts.append(Attempt(t0, time.time(), False, key, str(err)[:160]))
                if client is not None:
                    client.close()
                client = None  # a fresh channel next time: no reconnect backoff
            self.stop_event.wait(max(0.0, PROBE_PERIOD_S - (time.time() - t0)))
        if client:
            client.close()

    def settled_since(self, t: float) -> bool:
        """Writes accepted for SETTLE_S after t, and the last attempt was accepted."""
        a = self.attempts
        return (
            bool(a) and a[-1].ok and a[-1].end >= t + SETTLE_S and not any(not x.ok for x in a if x.end >= t)
        )


def rto_from(attempts: list[Attempt], t_off: float) -> tuple[float | None, float | None]:
    """(power loss -> first ack after the last failure, power loss -> first ack at all)."""
    first = next((a.end for a in attempts if a.ok), None)
    last_fail = max((i for i, a in enumerate(attempts) if not a.ok), default=-1)
    good = next((a.end for a in attempts[last_fail + 1 :] if a.ok), None)
    return (
        None if good is None else good - t_off,
        None if first is None else first - t_off,
    )


# --- the lab ---------------------------------------------------------------------------------------


def one_client(inv: Inventory, host: str) -> EtcdClient:
    e = inv.etcd
    return EtcdClient(
        [inv.client_url(inv.host(host))],
        ca_cert=e.client.ca_cert,
        cert=e.client.cert,
        key=e.client.key,
        dial_timeout=2,
        request_timeout=5,
    )


def build_lab(base: LabConfig, sc: Scenario) -> tuple[LabConfig, LabState, Inventory, dict[str, float]]:
    cfg = LabConfig(prefix=base.prefix, subnet=base.subnet, dir=base.dir, learner_etcd=sc.learner)
    t0 = time.monotonic()
    lines: list[str] = []
    try:
        state = lifecycle.up(cfg, say=lines.append)
    except Exception:
        log("\n".join(lines[-15:]))
        raise
    t_up = time.monotonic() - t0
    inv = load_inventory(cfg.inventory_path)
    t1 = time.monotonic()
    with client_for(inv) as c, cf.ThreadPoolExecutor(8) as pool:
        # 8 writers: the fill is setup, not measured; sequential puts cost ~3 fsyncs each
        list(pool.map(lambda i: c.put(f"{KEY_PREFIX}k{i:05d}", f"v{i}"), range(KEYS)))
        if c.range(KEY_PREFIX, KEY_PREFIX[:-1] + "0", count_only=True).count != KEYS:
            raise SystemExit(f"the fill did not write {KEYS} keys")
    t_fill = time.monotonic() - t1
    t2 = time.monotonic()
    if sc.learner is not None:
        caught_up(inv, sc.survivor)
    return cfg, state, inv, {"lab_up_s": t_up, "fill_s": t_fill, "catch_up_s": time.monotonic() - t2}


def caught_up(inv: Inventory, learner: str, timeout: float = 60) -> None:
    """Until the learner has applied everything the leader had when asked."""
    with client_for(inv) as c:
        target = next(
            st.raft_index for st in (c.status(inv.client_url(h)) for h in inv.voters) if st.is_leader
        )
        ep = inv.client_url(inv.host(learner))
        end = time.monotonic() + timeout
        while c.status(ep).raft_applied_index < target:
            if time.monotonic() > end:
                raise SystemExit(f"{learner} did not catch up within {timeout:.0f} s")
            time.sleep(0.05)


def ssh(cfg: LabConfig, host: str, script: str, timeout: float = 30) -> str:
    r = subprocess.run(
        lifecycle.ssh_argv(cfg, host, [script]), capture_output=True, text=True, timeout=timeout, check=False
    )
    if r.returncode != 0:
        raise SystemExit(f"ssh {host}: {script!r} exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def verify(cfg: LabConfig, inv: Inventory, sc: Scenario, probe: Probe) -> list[str]:
    """What is wrong with the recovered cluster (empty: a valid run)."""
    problems = []
    with one_client(inv, sc.survivor) as c:
        members = c.member_list(linearizable=True)
        if len(members) != 1:
            problems.append(f"{len(members)} members, not 1")
        n = c.range(KEY_PREFIX, KEY_PREFIX[:-1] + "0", count_only=True).count
        if n != KEYS:
            problems.append(f"{n} of {KEYS} keys")
        have = {kv.key.decode() for kv in c.range(PROBE_PREFIX, PROBE_PREFIX[:-1] + "0", keys_only=True).kvs}
        lost = [a.key for a in probe.attempts if a.ok and a.key not in have]
        if lost:
            problems.append(f"{len(lost)} acknowledged probe writes missing ({lost[:3]})")
    out = ssh(
        cfg,
        sc.survivor,
        "docker inspect -f '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}"
        "{{range .Args}} {{.}}{{end}}' etcd",
    )
    running, policy, *args = out.split()
    if running != "true" or policy != "always":
        problems.append(f"container etcd running={running} restart={policy}")
    if "--force-new-cluster" in args:
        problems.append("etcd runs with --force-new-cluster")
    return problems


def audit_lines(inv: Inventory) -> int:
    return len(inv.audit_log.read_text().splitlines()) if inv.audit_log and inv.audit_log.exists() else 0


def audit_breakdown(inv: Inventory, since: int) -> dict[str, dict]:
    """Per plan step of etcd-dr's run (and `observe` for what came before its first step), from its
    audit log: the commands it ran on hosts (each one SSH exec), their summed and longest time, and
    the step's own duration. The observe commands run in parallel: their sum is no wall time."""
    if inv.audit_log is None or not inv.audit_log.exists():
        return {}

    def fresh() -> dict:
        return {"commands": 0, "command_s": 0.0, "longest_s": 0.0, "longest": ""}

    out: dict[str, dict] = {}
    cur = fresh()
    for line in inv.audit_log.read_text().splitlines()[since:]:
        r = json.loads(line)
        if r.get("action") == "command":
            d = float(r.get("duration_s") or 0.0)
            cur["commands"] += 1
            cur["command_s"] += d
            if d >= cur["longest_s"]:
                cur["longest_s"], cur["longest"] = (
                    d,
                    " ".join(" ".join(map(str, r.get("argv") or [])).split())[:48],
                )
        elif str(r.get("action", "")).startswith("step:"):
            if not out:  # what came before the first step: observing and gathering fencing evidence
                out["observe"], cur = cur, fresh()
            out[str(r.get("step"))] = {**cur, "step_s": float(r.get("duration_s") or 0.0)}
            cur = fresh()
    return out


# --- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    round: int
    tool: str
    rto_s: float | None = None  # power loss -> writes accepted for good
    first_write_s: float | None = None  # power loss -> first accepted write
    wall_s: float | None = None  # the recovery process, start to exit
    started_s: float | None = None  # power loss -> the recovery process started
    own_write_s: float | None = None  # etcd-dr: power loss -> its own verify write (first_write_at)
    valid: bool = False
    problems: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # hand: elapsed at each step; etcd-dr: timings
    audit: dict[str, dict] = field(default_factory=dict)  # etcd-dr: per step, its commands (audit log)
    setup: dict[str, float] = field(default_factory=dict)
    probe_attempts: int = 0
    probe_failures: int = 0


STEP_LINE = re.compile(r"^\s*(\d+\.\d+) s  (\S+)$")


def recovery_argv(
    cfg: LabConfig, sc: Scenario, tool: str, baseline: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    if tool == "hand":
        ssh_argv = lifecycle.ssh_argv(cfg, sc.survivor, [])
        env = {**os.environ, "SSH": shlex.join(ssh_argv[:-1])}
        return ["bash", str(HERE / sc.runbook), ssh_argv[-1]], env
    env = {
        **os.environ,
        "ETCD_DR_LAB_PREFIX": cfg.prefix,
        "ETCD_DR_LAB_SUBNET": cfg.subnet,
        "ETCD_DR_LAB_DIR": str(cfg.dir),
    }
    if tool == BEFORE and baseline is not None:
        env["PYTHONPATH"] = str(baseline)  # ahead of the venv's editable install of this tree
    return [sys.executable, "-m", "etcd_dr.cli", "recover", "--yes", "--json"], env


def one_run(base: LabConfig, sc: Scenario, rnd: int, tool: str, baseline: Path | None = None) -> Run:
    run = Run(sc.name, rnd, tool)
    cfg, _, inv, run.setup = build_lab(base, sc)
    argv, env = recovery_argv(cfg, sc, tool, baseline)
    probe = Probe(inv, inv.client_url(inv.host(sc.survivor)))
    since = audit_lines(inv)
    t_off = time.time()
    for h in sc.lost:
        lifecycle.power_off(cfg, h, say=lambda _m: None)
    # at once: the probe, and the recovery (its start is the operator's reaction time, zero here)
    probe.start()
    t_start = time.time()
    # `python -m` puts its cwd first on sys.path: the baseline's tree must be the cwd, not this one
    cwd = baseline if tool == BEFORE and baseline is not None else None
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=RECOVERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.kill()  # our own child, by its PID
        out, err = p.communicate()
        run.problems.append(f"the recovery did not finish within {RECOVERY_TIMEOUT_S:.0f} s")
    t_exit = time.time()
    run.started_s, run.wall_s = t_start - t_off, t_exit - t_start
    end = t_exit + (60 if p.returncode == 0 else 0)  # a failed recovery: nothing to wait for
    while not probe.settled_since(t_exit) and time.time() < end:
        time.sleep(0.1)
    probe.stop_event.set()
    probe.join()
    run.probe_attempts = len(probe.attempts)
    run.probe_failures = sum(not a.ok for a in probe.attempts)
    run.rto_s, run.first_write_s = rto_from(probe.attempts, t_off)
    if not probe.settled_since(t_exit):
        run.problems.append("writes not accepted for good within 60 s of the recovery's exit")
    if p.returncode != 0:
        run.problems.append(f"{tool} exited {p.returncode}: {(err or out).strip()[-400:]}")
    if tool == "hand":
        for line in err.splitlines():
            if m := STEP_LINE.match(line):
                run.steps[m.group(2)] = float(m.group(1))
    elif p.returncode == 0:
        res = json.loads(out)
        run.steps = {"startup": run.wall_s - res["timings"]["total"], **res["timings"]}
        run.audit = audit_breakdown(inv, since)
        if "observe" in run.audit:  # observing and fencing ran together: their wall time
            run.audit["observe"]["step_s"] = res["timings"].get("fence")
        if res["first_write_at"]:
            run.own_write_s = res["first_write_at"] - t_off
        if res["status"] != "recovered" or res["path"] != sc.path:
            run.problems.append(f"etcd-dr: {res['status']} by {res['path']}, not recovered by {sc.path}")
    if p.returncode == 0:
        try:
            run.problems += verify(cfg, inv, sc, probe)
        except EtcdDrError as e:
            run.problems.append(f"verification failed: {e}")
    run.valid = not run.problems and run.rto_s is not None
    return run


# --- report --------------------------------------------------------------------------------------


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _median(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return statistics.median(xs) if xs else None


def election_wait(r: Run) -> float | None:
    """The wait for the recovered member's own election, the last step of both recoveries: etcd's
    randomized election timeout, one draw per run from the same range for both tools (with RKE's
    500/5000 ms, after a single member's fast-forward: 1-10 ticks of 0.5 s). It is most of one
    run's spread, so the RTO without it shows what each tool itself costs. Hand: its "leader" step
    less the one before; etcd-dr: its wait-healthy step."""
    if r.tool == "hand":
        keys = list(r.steps)  # elapsed at the end of each step, in the script's order
        i = keys.index("leader") if "leader" in keys else 0
        return r.steps["leader"] - r.steps[keys[i - 1]] if i > 0 else None
    return next((v for k, v in r.steps.items() if k.startswith("step:wait-healthy:")), None)


def summarize(runs: list[Run]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in SCENARIOS:
        rs = [r for r in runs if r.scenario == name and r.valid]
        if not any(r.scenario == name for r in runs):
            continue
        tools = [*TOOLS, *([BEFORE] if any(r.tool == BEFORE for r in runs) else [])]
        med = {t: _median([r.rto_s for r in rs if r.tool == t]) for t in tools}
        first = {t: _median([r.first_write_s for r in rs if r.tool == t]) for t in tools}
        ratio = med["etcd-dr"] / med["hand"] if med["hand"] and med["etcd-dr"] else None
        elect = {t: _median([election_wait(r) for r in rs if r.tool == t]) for t in tools}
        own = {
            t: _median(
                [
                    r.rto_s - w
                    for r in rs
                    if r.tool == t and r.rto_s is not None and (w := election_wait(r)) is not None
                ]
            )
            for t in tools
        }
        before = med.get(BEFORE)
        ratio_before = before / med["hand"] if med["hand"] and before else None
        out[name] = {
            "rto_median_s": med,
            "first_write_median_s": first,
            "wall_median_s": {t: _median([r.wall_s for r in rs if r.tool == t]) for t in tools},
            "ratio_before": ratio_before,
            "election_wait_median_s": elect,
            "rto_less_election_median_s": own,
            "commands_median": {
                t: _median([float(sum(x["commands"] for x in r.audit.values())) for r in rs if r.tool == t])
                for t in tools
                if t != "hand"
            },
            "ratio": ratio,
            "target": TARGET_RATIO,
            "met": ratio is not None and ratio <= TARGET_RATIO,
            "valid_runs": {t: sum(r.tool == t for r in rs) for t in tools},
            "invalid_runs": sum(r.scenario == name and not r.valid for r in runs),
        }
    return out


def _step_table(rows: list[Run], title: str) -> list[str]:
    if not rows:
        return []
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.steps if k not in keys]
    head = "".join(f"{'r' + str(r.round):>8s}" for r in rows)
    lines = [f"  {title}", f"    {'':26s}{head}{'median':>8s}"]
    for k in keys:
        vals = [r.steps.get(k) for r in rows]
        cells = "".join(f"{_f(v):>8s}" for v in vals)
        lines.append(f"    {k.removeprefix('step:'):26s}{cells}{_f(_median(vals)):>8s}")
    return lines


def _audit_table(rows: list[Run]) -> list[str]:
    """Medians over the runs, per step: its time, the commands it ran on the host and their time."""
    rows = [r for r in rows if r.audit]
    if not rows:
        return []
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.audit if k not in keys]
    lines = [
        "  etcd-dr per step, from its audit log (medians; observe = the commands before the first step, "
        "in parallel)",
        f"    {'step':26s}{'step s':>8s}{'cmds':>6s}{'in cmds s':>11s}{'rest s':>8s}  longest command",
    ]
    for k in keys:
        recs = [r.audit[k] for r in rows if k in r.audit]
        step_s = _median([x.get("step_s") for x in recs])
        cmd_s = _median([x["command_s"] for x in recs])
        n = _median([float(x["commands"]) for x in recs])
        longest = max(recs, key=lambda x: x["longest_s"])
        rest = "" if k == "observe" or step_s is None or cmd_s is None else _f(step_s - cmd_s)
        lines.append(
            f"    {k:26s}{_f(step_s):>8s}{n or 0:>6.0f}{_f(cmd_s):>11s}{rest:>8s}  "
            f"{longest['longest']} ({longest['longest_s']:.2f} s)"
        )
    return lines


def report(runs: list[Run], summary: dict[str, dict], facts: dict) -> str:
    lines = [
        f"machine: {facts['cores']} cores ({facts['cpu']}), {facts['kernel']}, Python {facts['python']}; "
        f"etcd voters {facts['etcd_voters']}, learner {facts['etcd_learner']}; docker {facts['docker']}",
        f"load average (1/5/15 min): start {facts['load_start']}, end {facts['load_end']}",
        "hand masters-lost runbook: "
        + (
            f"forced run with extra flags {facts['hand_forced_flags']}"
            if facts["hand_forced_flags"]
            else "literal"
        ),
        "RTO = power loss -> writes accepted for good (probe every 0.1 s on the survivor); "
        "first = the probe's first accepted write; wall = the recovery process",
    ]
    for name, sc in SCENARIOS.items():
        rs = [r for r in runs if r.scenario == name]
        if not rs:
            continue
        s = summary[name]
        lines += [
            "",
            f"== {name}: {', '.join(sc.lost)} powered off, recovered on {sc.survivor} "
            f"(RKE timings 500/5000 ms, {KEYS} keys)",
            f"  {'round':>5s}  {'tool':8s}{'RTO s':>8s}{'first s':>9s}{'wall s':>8s}{'start s':>9s}  valid",
        ]
        for r in rs:
            ok = "yes" if r.valid else "NO: " + "; ".join(r.problems)
            lines.append(
                f"  {r.round:>5d}  {r.tool:8s}{_f(r.rto_s):>8s}{_f(r.first_write_s):>9s}"
                f"{_f(r.wall_s):>8s}{_f(r.started_s):>9s}  {ok}"
            )
        m, fm = s["rto_median_s"], s["first_write_median_s"]
        verdict = "met" if s["met"] else "NOT met"
        lines += [
            f"  median RTO: hand {_f(m['hand'])} s, etcd-dr {_f(m['etcd-dr'])} s; "
            f"etcd-dr/hand {_f(s['ratio'])} (target <= {TARGET_RATIO}: {verdict})",
            f"  median first write: hand {_f(fm['hand'])} s, etcd-dr {_f(fm['etcd-dr'])} s",
        ]
        if BEFORE in m:
            lines.append(
                f"  before (--baseline): median RTO {_f(m[BEFORE])} s, first write {_f(fm[BEFORE])} s, "
                f"before/hand {_f(s['ratio_before'])}"
            )
        el, own = s["election_wait_median_s"], s["rto_less_election_median_s"]
        lines.append(
            "  the recovered member's own election (the same random draw for both; median): "
            + ", ".join(f"{t} {_f(v)} s" for t, v in el.items())
            + "; RTO without it (median): "
            + ", ".join(f"{t} {_f(v)} s" for t, v in own.items())
        )
        cmds = s["commands_median"]
        lines.append(
            "  remote commands per recovery (audit log, median): "
            + ", ".join(f"{t} {_f(v)}" for t, v in cmds.items())
        )
        lines += _step_table(
            [r for r in rs if r.tool == "etcd-dr"],
            "etcd-dr --json timings (s; startup = wall - total: Python start, imports, inventory; "
            "fence counts from the start, observe included)",
        )
        lines += _audit_table([r for r in rs if r.tool == "etcd-dr"])
        lines += _step_table([r for r in rs if r.tool == BEFORE], f"{BEFORE}: etcd-dr --json timings (s)")
        if any(r.tool == BEFORE for r in rs):
            lines += ["  " + BEFORE + ":", *_audit_table([r for r in rs if r.tool == BEFORE])]
        lines += _step_table(
            [r for r in rs if r.tool == "hand"], "hand script: elapsed at the end of each step (s)"
        )
    return "\n".join(lines)


def machine_facts(state: LabState | None, cfg: LabConfig) -> dict:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        "?",
    )
    docker = "?"
    with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
        docker = ssh(cfg, "node2", "docker version --format '{{.Server.Version}}'").strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "etcd_voters": state.etcd_version if state else "?",
        "etcd_learner": state.learner_version if state and state.learner_version else "?",
        "docker": docker,
        "hand_forced_flags": os.environ.get("FORCED_FLAGS", ""),  # the runbook's knob; none: literal
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS)
    )
    # the lab the caller's env names (ETCD_DR_LAB_*, as the CLI and the lab tests read them): two
    # engineers' benchmarks on one machine must not rebuild each other's lab
    ap.add_argument(
        "--prefix",
        default=os.environ.get("ETCD_DR_LAB_PREFIX", "bm"),
        help="the lab's prefix (it is rebuilt for every run; default $ETCD_DR_LAB_PREFIX, else bm)",
    )
    ap.add_argument(
        "--subnet",
        default=os.environ.get("ETCD_DR_LAB_SUBNET", "10.231.23.0/24"),
        help="default $ETCD_DR_LAB_SUBNET, else 10.231.23.0/24",
    )
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="also run etcd-dr as of this git ref (e.g. main) as tool 'before', alternating in the same "
        "rounds (its tree is `git archive`d to a temp dir)",
    )
    ap.add_argument("--keep-lab", action="store_true", help="leave the last lab up (default: down, wiped)")
    ap.add_argument(
        "--json", action="store_true", help="print the figures as one JSON object (tables to stderr)"
    )
    args = ap.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; one of {', '.join(SCENARIOS)}")
    env_dir = os.environ.get("ETCD_DR_LAB_DIR")
    lab_dir = env_dir if args.prefix == os.environ.get("ETCD_DR_LAB_PREFIX") else None
    base = LabConfig(
        prefix=args.prefix, subnet=args.subnet, dir=Path(lab_dir) if lab_dir else default_lab_dir(args.prefix)
    )

    baseline: Path | None = None
    tools: tuple[str, ...] = TOOLS
    if args.baseline:
        baseline = Path(tempfile.mkdtemp(prefix="etcd-dr-baseline-"))
        archive = subprocess.run(
            ["git", "-C", str(HERE.parent), "archive", args.baseline], capture_output=True, check=False
        )
        if archive.returncode != 0:
            ap.error(f"--baseline {args.baseline}: git archive failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)
        tools = ("hand", BEFORE, "etcd-dr")
    load_start = os.getloadavg()
    runs: list[Run] = []
    learner_state: LabState | None = None
    try:
        for rnd in range(1, args.rounds + 1):
            # alternate who goes first from round to round: a drifting machine load favours neither
            order = tools if rnd % 2 else tools[::-1]
            for name in names:
                for tool in order:
                    log(f"round {rnd} {name} {tool}: building the lab, {KEYS} keys ...")
                    run = one_run(base, SCENARIOS[name], rnd, tool, baseline)
                    runs.append(run)
                    state = lifecycle.load_state(base)
                    if state.learner_version:
                        learner_state = state
                    verdict = "valid" if run.valid else "INVALID: " + "; ".join(run.problems)
                    log(
                        f"round {rnd} {name} {tool}: RTO {_f(run.rto_s)} s, first write "
                        f"{_f(run.first_write_s)} s, wall {_f(run.wall_s)} s, {verdict}"
                    )
        facts = machine_facts(learner_state or lifecycle.load_state(base), base)
    finally:
        if not args.keep_lab:
            lifecycle.down(base, wipe=True, say=lambda _m: None)
    facts["load_start"] = " ".join(f"{x:.2f}" for x in load_start)
    facts["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarize(runs)
    text = report(runs, summary, facts)
    if args.json:
        log(text)
        print(json.dumps({"machine": facts, "summary": summary, "runs": [asdict(r) for r in runs]}, indent=2))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
