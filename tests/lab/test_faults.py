"""`etcd-dr fault` on the real lab: power and etcd faults through the lab's controls, a network cut
with tagged iptables rules over SSH (the real-host path, on an inventory copy), fencing evidence,
refusals that change nothing. Every test leaves 3 healthy voters."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from etcd_dr.inventory import load_inventory
from etcd_dr.recovery.fencing import gather
from etcd_dr.recovery.plan import FenceKind

from .conftest import Lab

pytestmark = pytest.mark.lab


def cli(lab: Lab, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = lab.etcd_dr(*args, timeout=timeout)
    return r, time.monotonic() - t0


def status(lab: Lab, *, ssh: bool = False) -> dict:
    r, _ = cli(lab, "status", "--json", *([] if ssh else ["--no-ssh"]), timeout=60)
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    return json.loads(r.stdout)


def wait_voters(lab: Lab, answering: int, timeout: float = 60, *, ssh: bool = False) -> dict:
    """Until quorum holds with exactly `answering` voters answering (an election may be under way)."""
    end = time.monotonic() + timeout
    while True:
        out = status(lab, ssh=ssh)
        if (out["quorum"] and out["voters_answering"] == answering) or time.monotonic() > end:
            assert out["quorum"] and out["voters_answering"] == answering, out["verdict"]
            return out
        time.sleep(0.3)


def member(out: dict, name: str) -> dict:
    return next(m for m in out["members"] if m["name"] == name)


def inventory_copy(lab: Lab, dest: Path, *, rehearsal: bool) -> Path:
    """The lab's inventory elsewhere, as a real cluster's would be: not recognised as the lab's, so
    faults go over SSH."""
    src = lab.cfg.inventory_path
    d = yaml.safe_load(src.read_text())
    base = src.parent
    d["rehearsal"] = rehearsal
    d["audit_log"] = str(dest / "audit.jsonl")
    d["ssh"]["key_file"] = str(base / d["ssh"]["key_file"])
    d["ssh"]["known_hosts"] = str(base / d["ssh"]["known_hosts"])
    for k in ("ca_cert", "cert", "key"):
        d["etcd"]["client"][k] = str(base / d["etcd"]["client"][k])
    if (d.get("power") or {}).get("dir"):  # the lab's power driver reads the lab's own state
        d["power"]["dir"] = str(base / d["power"]["dir"])
    path = dest / "inventory.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def audit_events(path: Path, action: str) -> list[dict]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["action"] == action]


def test_power_fault_then_heal(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    r, inject_s = cli(lab, "fault", "kill-master", "--host", "master1", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (fault,) = out["faults"]
    assert (fault["host"], fault["mode"], fault["via"]) == ("master1", "power", "lab")
    assert out["reason"] == (
        "rehearsal fault on lab-fi: power loss (cable out, every process of the host killed at once) of "
        "voter master1 via lab; `etcd-dr fault heal --host master1` undoes it"
    ).replace("lab-fi", f"lab-{lab.cfg.prefix}")
    st = wait_voters(lab, 2, ssh=True)
    assert st["verdict"].startswith("quorum held: 2 of 3 voters healthy")
    m1 = member(st, "master1")
    assert not m1["reachable"] and m1["ssh"] == "unreachable"

    r, heal_s = cli(lab, "fault", "heal", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reason"] == "heal 1 active fault: master1 (power)"
    wait_voters(lab, 3)
    r, _ = cli(lab, "fault", "heal")
    assert r.returncode == 0 and "no active fault: nothing to heal" in r.stdout  # idempotent
    print(f"power fault: inject {inject_s:.2f} s, heal {heal_s:.2f} s (CLI wall time)")

    audit = lab.cfg.dir / "audit.jsonl"
    assert [e["outcome"] for e in audit_events(audit, "fault-inject") if e.get("fault") == fault["id"]] == [
        "ok"
    ]
    assert [e["outcome"] for e in audit_events(audit, "fault-heal") if e.get("fault") == fault["id"]] == [
        "ok"
    ]


def test_etcd_fault_keeps_the_host_and_heal_restarts_etcd(running_lab: Lab) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    r, inject_s = cli(lab, "fault", "kill-master", "--host", "master2", "--mode", "etcd", "--yes")
    assert r.returncode == 0, r.stderr
    st = wait_voters(lab, 2, ssh=True)
    m2 = member(st, "master2")
    assert not m2["reachable"] and m2["ssh"] == "ok"  # only etcd died: sshd still answers

    # fencing evidence: the killed member is not fenced (restart=always brings it back) and says how
    # to fence it; a live one, asked on its own host, follows a leader: alive, never fenced
    inv = load_inventory(lab.cfg.inventory_path)
    ev = gather(inv, ["master2", "master3"])
    assert not ev["master2"].fenced
    assert "its container etcd is stopped but restart=always starts it again" in ev["master2"].how
    assert "`docker update --restart=no etcd && docker kill etcd` on master2" in ev["master2"].how
    assert ev["master3"].kind is FenceKind.ALIVE and not ev["master3"].fenced, ev["master3"]
    assert "its etcd runs and, asked on master3 itself, follows leader " in ev["master3"].how

    r, heal_s = cli(lab, "fault", "heal", "--host", "master2")
    assert r.returncode == 0, r.stderr
    wait_voters(lab, 3)
    print(f"etcd fault: inject {inject_s:.2f} s, heal {heal_s:.2f} s (CLI wall time)")


def test_network_cut_on_a_real_host_uses_tagged_iptables_rules(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv_path = inventory_copy(lab, tmp_path, rehearsal=True)
    args = ("-i", str(inv_path), "--host", "master3", "--mode", "network", "--yes", "--json")
    r, inject_s = cli(lab, "fault", "kill-master", *args)
    assert r.returncode == 0, r.stderr
    (fault,) = json.loads(r.stdout)["faults"]
    assert fault["via"] == "ssh"
    tag = f"etcd-dr-fault-{fault['id']}"
    rules = lab.cli("ssh", "master3", "--", "iptables", "-S").stdout
    assert rules.count(f"--comment {tag}") == 2, rules
    wait_voters(lab, 2)
    inv = load_inventory(inv_path)
    # a network cut is silence: never fencing evidence by itself. Loopback stays open, so asked on
    # its own host the cut member answers, and once its election timeout has passed it knows no
    # leader: a recovery would stop it for good first (before that it still names the old leader)
    end = time.monotonic() + 30
    while True:
        cut = gather(inv, ["master3"])["master3"]
        assert not cut.fenced, cut
        if cut.kind is FenceKind.TO_STOP or time.monotonic() > end:
            break
        time.sleep(1)
    assert cut.kind is FenceKind.TO_STOP and "asked on master3 itself, knows no leader" in cut.how, cut

    r, heal_s = cli(lab, "fault", "heal", "-i", str(inv_path))
    assert r.returncode == 0, r.stderr
    assert tag not in lab.cli("ssh", "master3", "--", "iptables", "-S").stdout
    wait_voters(lab, 3)
    assert (tmp_path / f"faults-{inv.cluster}.json").exists()
    assert json.loads((tmp_path / f"faults-{inv.cluster}.json").read_text())["faults"] == []
    print(f"network fault (iptables over SSH): inject {inject_s:.2f} s, heal {heal_s:.2f} s (CLI wall time)")


def test_refusals_change_nothing(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    before = lab.cli("ssh", "master1", "--", "iptables", "-S").stdout
    inv_path = inventory_copy(lab, tmp_path, rehearsal=False)
    r, _ = cli(
        lab, "fault", "kill-master", "-i", str(inv_path), "--host", "master1", "--mode", "network", "--yes"
    )
    assert r.returncode == 2
    assert "is not marked for rehearsal" in r.stderr and "set `rehearsal: true`" in r.stderr
    assert not list(tmp_path.glob("faults-*.json"))  # nothing recorded as injected

    r, _ = cli(lab, "fault", "kill-master", "--host", "node2", "--yes")
    assert r.returncode == 2
    assert (
        "node2 is not an etcd voter (roles: worker); kill-master takes one of master1, master2, master3"
        in (r.stderr)
    )
    r, _ = cli(lab, "fault", "kill-master", "--host", "nosuch", "--yes")
    assert r.returncode == 2 and "no host named 'nosuch'" in r.stderr
    r, _ = cli(lab, "fault", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert lab.cli("ssh", "master1", "--", "iptables", "-S").stdout == before
    wait_voters(lab, 3, timeout=5)
