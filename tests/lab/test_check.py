"""`etcd-dr check` and the check flow on the real lab: no learner, no / a stale / a fresh snapshot, a
certificate expiring soon and one not yet valid, a skewed clock, a master powered off. Everything
changed on the lab is put back (the session's lab is shared with the other lab tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from etcd_dr.certs import CertKeyPair, issue_cert
from etcd_dr.executor import executor_for
from etcd_dr.inventory import Inventory, SnapshotSettings, inventory_to_dict, load_inventory
from etcd_dr.readiness import Check, Readiness, check_readiness
from etcd_dr.readiness.evaluate import go_time
from etcd_dr.snapshots import Catalog, SnapshotRecord, Verdict
from etcd_dr.state import observe

from .conftest import Lab

pytestmark = pytest.mark.lab

# A STAND-IN for date(1), installed on one lab host for the skew test only: the lab's hosts share
# the kernel clock and `date -s` is refused there, so this host's `date` reads 30 s ahead instead.
FAKE_DATE = b"""#!/bin/sh
# STAND-IN date(1) from etcd-dr's tests (tests/lab/test_check.py): the real clock + 30 s.
exec /usr/bin/date -d '+30 seconds' "$@"
"""
FAKE_DATE_PATH = "/usr/local/bin/date"  # ahead of /usr/bin on sshd's PATH; /usr is copy-on-write


def lab_inventory(lab: Lab, snapshots: Path) -> Inventory:
    """The lab's inventory with a snapshot directory of this test's own."""
    inv = load_inventory(lab.cfg.inventory_path)
    return dataclasses.replace(inv, snapshots=SnapshotSettings(dir=snapshots))


def write_inventory(inv: Inventory, path: Path) -> Path:
    path.write_text(yaml.safe_dump(inventory_to_dict(inv)))
    return path


def add_snapshot(inv: Inventory, age: dt.timedelta) -> SnapshotRecord:
    created = dt.datetime.now(dt.UTC) - age
    rec = SnapshotRecord(
        id=f"{inv.cluster}-{created:%Y%m%dT%H%M%S%fZ}-master1", cluster=inv.cluster, member="master1",
        endpoint=inv.client_url(inv.host("master1")), revision=7, raft_index=9, size=20512,
        sha256="0" * 64, created=created, verified=True, verdict=Verdict.VERIFIED,
        reason="written by the test", path=inv.snapshot_settings().dir / "x.db",
    )  # fmt: skip
    Catalog(inv.snapshot_settings().dir).add(rec)
    return rec


def cli_check(lab: Lab, inv_path: Path, *args: str) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "check", "-i", str(inv_path), "--json", *args],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), time.monotonic() - t0


def results(out: dict | Readiness, check: str, host: str | None = None) -> list[dict]:
    rows = out.to_json()["results"] if isinstance(out, Readiness) else out["results"]
    return [r for r in rows if r["check"] == check and (host is None or r["host"] == host)]


def wait_quorum(inv: Inventory, answering: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while True:
        s = observe(inv, check_ssh=False)
        if s.quorum and s.voters_answering == answering:
            return
        assert time.monotonic() < end, s.verdict
        time.sleep(0.5)


def test_check_names_no_learner_and_the_snapshot_age(running_lab: Lab, tmp_path: Path) -> None:
    inv = lab_inventory(running_lab, tmp_path / "snapshots")
    path = write_inventory(inv, tmp_path / "inventory.yaml")
    wait_quorum(inv, 3)

    rc, out, healthy_s = cli_check(running_lab, path)
    print(f"check, healthy lab: {healthy_s:.2f} s (in the check: {out['duration_s']} s)")
    assert rc == 1 and out["ok"] is False and out["critical_failures"] == 1
    failures = [(r["check"], r["critical"]) for r in out["results"] if not r["ok"]]
    assert failures == [("learner", False), ("snapshot", True)]
    (learner,) = results(out, "learner")
    assert learner["detail"].startswith("no learner")
    assert "`etcd-dr learner add --host node1`" in learner["hint"]
    (snap,) = results(out, "snapshot")
    assert snap["detail"].startswith(f"no verified snapshot in {tmp_path / 'snapshots'}")
    assert "take one now" in snap["hint"]
    # everything else was looked at and is fine: 3 members x 2 certs, 5 clocks, 3 disks
    assert (
        len(results(out, "cert")) == 6 and len(results(out, "clock")) == 5 and len(results(out, "disk")) == 3
    )
    assert results(out, "quorum")[0]["detail"].startswith("quorum held: 3 of 3 voters healthy")
    assert out["duration_s"] < out["deadline_s"]

    add_snapshot(inv, dt.timedelta(hours=30))
    rc, out, _ = cli_check(running_lab, path)
    (snap,) = results(out, "snapshot")
    assert rc == 1 and not snap["ok"] and snap["critical"]
    assert re.search(r"is 30\.0 h old \(limit 26 h\)$", snap["detail"]), snap["detail"]

    fresh = add_snapshot(inv, dt.timedelta(minutes=10))
    rc, out, _ = cli_check(running_lab, path)
    (snap,) = results(out, "snapshot")
    assert rc == 0 and out["ok"] is True and out["critical_failures"] == 0, out
    assert snap["ok"] and fresh.id in snap["detail"] and "is 0.2 h old" in snap["detail"]

    table = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "check", "-i", str(path)],
        env=running_lab.cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stdout + table.stderr
    assert "| learner  | -       | warn   | no learner" in table.stdout
    assert "what to do:\n  learner: add one in another failure domain" in table.stdout
    assert re.search(r"^ready: 17 of 18 checks ok; 1 warning \(learner\)", table.stdout, re.M), table.stdout


def test_check_judges_each_certificate_by_its_host_clock(running_lab: Lab, tmp_path: Path) -> None:
    inv = lab_inventory(running_lab, tmp_path / "snapshots")
    d = running_lab.cfg.certs_dir
    ca = CertKeyPair((d / "kube-ca.pem").read_bytes(), (d / "kube-ca-key.pem").read_bytes())
    # The not-yet-valid cert goes on a follower: etcd re-reads the pair at each new handshake, and a
    # leader whose peer handshakes fail would take quorum down with it (a flake seen in CI).
    leader = observe(inv, check_ssh=False).leader
    followers = [h for h in ("master1", "master2", "master3") if h != leader]
    m1, m2 = inv.host(leader or "master1"), inv.host(followers[-1])
    originals: dict[str, tuple[bytes, bytes]] = {}
    nb = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    exs = {h.name: executor_for(inv, h) for h in (m1, m2)}
    try:
        for h, kw in ((m1, {"days": 20}), (m2, {"not_before": nb})):
            ex = exs[h.name]
            originals[h.name] = (ex.get(inv.etcd.cert_path(h)), ex.get(inv.etcd.key_path(h)))
            pair = issue_cert(
                ca, f"kube-etcd-{h.address_dashed}", ips=(h.address, "127.0.0.1"), dns=(h.name,), **kw
            )
            # key first, then the certificate: etcd reads the pair at each new handshake
            ex.put(pair.key_pem, inv.etcd.key_path(h), mode=0o600, reason="test: short-lived cert")
            ex.put(pair.cert_pem, inv.etcd.cert_path(h), reason="test: short-lived cert")
        r = check_readiness(inv)
    finally:
        for name, (cert, key) in originals.items():
            h = inv.host(name)
            exs[name].put(key, inv.etcd.key_path(h), mode=0o600, reason="test: restore")
            exs[name].put(cert, inv.etcd.cert_path(h), reason="test: restore")
        for ex in exs.values():
            ex.close()

    member1, ca1 = results(r, "cert", m1.name)
    assert not member1["ok"] and not member1["critical"], member1
    assert re.search(
        r"^kube-etcd-\S+\.pem \(member\) expires in 2\d\.\d days, .*: under 30 days$", member1["detail"]
    )
    assert "renew it before then" in member1["hint"] and ca1["ok"]
    member2, _ = results(r, "cert", m2.name)
    assert not member2["ok"] and member2["critical"]
    m = re.fullmatch(
        rf"kube-etcd-{m2.address_dashed}\.pem: x509: certificate has expired or is not yet valid: "
        r"current time (\S+) is before (\S+)",
        member2["detail"],
    )
    assert m and m.group(2) == go_time(nb), member2["detail"]
    host_now = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    assert abs((host_now - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    assert "sync it" in member2["hint"] and "re-issue" in member2["hint"]
    assert {(f.check, f.host) for f in r.critical_failures} == {
        (Check.CERT, m2.name),
        (Check.SNAPSHOT, None),
    }
    wait_quorum(inv, 3)  # the originals are back: new handshakes to master2 work again


def test_check_names_the_host_with_a_skewed_clock(running_lab: Lab, tmp_path: Path) -> None:
    inv = lab_inventory(running_lab, tmp_path / "snapshots")
    with executor_for(inv, "master3") as ex:
        try:
            ex.put(FAKE_DATE, FAKE_DATE_PATH, mode=0o755, reason="test: stand-in date, +30 s")
            assert ex.run(["sh", "-c", "command -v date"]).stdout.strip() == FAKE_DATE_PATH
            r = check_readiness(inv)
        finally:
            ex.run(["rm", "-f", FAKE_DATE_PATH], reason="test: remove the stand-in date")
        assert ex.run(["sh", "-c", "command -v date"]).stdout.strip() == "/usr/bin/date"
    bad = [x for x in r.results if x.check is Check.CLOCK and not x.ok]
    assert [x.host for x in bad] == ["master3"], r.results
    (x,) = bad
    assert not x.critical and "sync master3's clock" in x.hint
    m = re.match(r"(\d+\.\d+) s ahead of the hosts' median", x.detail)
    assert m and 29.5 < float(m.group(1)) < 30.5, x.detail
    m = re.search(r"the skew between master3 and \w+ is (\d+\.\d+) s \(±0\.\d+ s\), over 1 s$", x.detail)
    assert m and 29.5 < float(m.group(1)) < 30.5, x.detail
    # the certificates on master3 were judged by master3's (stand-in) clock, 30 s ahead: still fine
    assert all(c["ok"] for c in results(r, "cert", "master3"))


def test_check_keeps_its_deadline_with_a_master_powered_off(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    inv = lab_inventory(lab, tmp_path / "snapshots")
    path = write_inventory(inv, tmp_path / "inventory.yaml")
    assert lab.cli("power", "master1", "off").returncode == 0
    try:
        wait_quorum(inv, 2)  # if master1 led, the others elect a leader first
        rc, out, took = cli_check(lab, path, "--deadline", "10")
        print(f"check, master1 off: {took:.2f} s (in the check: {out['duration_s']} s)")
        assert rc == 1 and out["duration_s"] < 10 and took < 12
        (q,) = results(out, "quorum")
        assert q["ok"] and q["detail"].startswith("quorum held: 2 of 3 voters healthy")
        for check in ("cert", "disk", "clock"):
            rows = results(out, check, "master1")
            assert rows and all(not x["ok"] and "master1 unreachable" in x["detail"] for x in rows), rows
        assert all(not x["critical"] for x in results(out, "clock", "master1"))
        assert all(x["critical"] for x in results(out, "cert", "master1") + results(out, "disk", "master1"))
        assert all(x["ok"] for x in results(out, "cert", "master2") + results(out, "disk", "master3"))

        # a deadline shorter than the SSH connect timeout (3 s): what is still pending says so
        t0 = time.monotonic()
        r = check_readiness(inv, deadline_s=1.0)
        short_s = time.monotonic() - t0
        print(f"check with a 1 s deadline, master1 off: {short_s:.2f} s")
        assert short_s < 1.5
        (clock1,) = results(r, "clock", "master1")
        assert clock1["detail"] == "clock not measured: no answer within the 1 s deadline"
    finally:
        assert lab.cli("power", "master1", "on").returncode == 0
    wait_quorum(inv, 3)


def test_check_flow_publishes_a_table_and_fails_when_not_ready(
    running_lab: Lab, prefect_harness, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact
    from prefect.logging.handlers import APILogHandler

    from flows.check import check_flow

    inv = lab_inventory(running_lab, tmp_path / "snapshots")
    path = write_inventory(inv, tmp_path / "inventory.yaml")
    wait_quorum(inv, 3)
    state = check_flow(inventory_path=str(path), return_state=True)
    assert state.is_failed()
    assert "not ready: 1 critical failure (snapshot); 1 warning (learner)" in state.message

    add_snapshot(inv, dt.timedelta(hours=1))
    out = check_flow(inventory_path=str(path))
    assert out["ok"] is True and out["critical_failures"] == 0
    art = Artifact.get(key=f"etcd-check-{inv.cluster}".lower())
    assert art is not None and art.type == "table"
    rows = json.loads(art.data) if isinstance(art.data, str) else art.data
    assert {"check": "learner", "host": "-", "result": "warn"}.items() <= rows[2].items()
    assert [r["check"] for r in rows].count("cert") == 6
    assert art.description.startswith("**ready: 17 of 18 checks ok")
    # ship the runs' logs while the server is up (else the handler retries them at exit for a minute)
    asyncio.run(APILogHandler.aflush())


def test_check_says_a_refused_host_key_and_not_to_reissue_certificates(
    running_lab: Lab, tmp_path: Path
) -> None:
    """master2's line in known_hosts names another key (what a reinstalled host, or an interceptor,
    looks like): check must say the host key was refused and how to fix known_hosts, and must not
    call its certificates unreadable or suggest re-issuing them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    inv = lab_inventory(running_lab, tmp_path / "snapshots")
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    addr = inv.host("master2").address
    lines = Path(inv.ssh.known_hosts).read_text().splitlines()
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "".join(
            f"{ln.split()[0]} {other.decode()}\n" if ln.startswith(f"{addr},") else f"{ln}\n" for ln in lines
        )
    )
    inv = dataclasses.replace(inv, ssh=dataclasses.replace(inv.ssh, known_hosts=kh))
    t0 = time.monotonic()
    r = check_readiness(inv, deadline_s=10)
    took = time.monotonic() - t0
    mine = [x for x in r.results if x.host == "master2"]
    (ssh,) = [x for x in mine if x.check is Check.SSH]
    assert not ssh.ok and ssh.critical and "host key refused" in ssh.detail and "does not match" in ssh.detail
    assert "host key changed or is unknown" in ssh.hint and str(kh) in ssh.hint
    assert not any("re-issue" in x.hint or "cert issue" in x.hint for x in mine), mine
    assert {x.check for x in mine if x.detail == "not checked: SSH refused master2's host key"} == {
        Check.CERT, Check.CLOCK, Check.DISK
    }  # fmt: skip
    assert not any(x.check is Check.SSH for x in r.results if x.host != "master2")
    print(f"check with master2's host key refused: {took:.2f} s")
