"""`etcd-dr fault cert-not-yet-valid` on the lab: master1's member certificate is reissued by kube-ca
with NotBefore 8 h ahead and etcd restarted; the real etcd of its peers refuses it in Go's own words
(found in etcd's own log), `etcd-dr hosts clock` flags the file with both times and blames the
certificate (the clocks are right), `etcd-dr cert renew` repairs it (and refuses to restart master2
meanwhile: that would cost quorum) and no x509 error is in etcd's log after it; `fault heal` then
finds nothing to undo."""

from __future__ import annotations

import json
import re
import time

import pytest

from etcd_dr.executor import executor_for
from etcd_dr.inventory import load_inventory

from .conftest import Lab

pytestmark = pytest.mark.lab
T = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
X509 = re.compile(rf"x509: certificate has expired or is not yet valid: current time {T} is before {T}")


def etcd_log(lab: Lab, host: str, since: str) -> str:
    inv = load_inventory(lab.cfg.inventory_path)
    ex = executor_for(inv, host)
    try:
        r = ex.run(["docker", "logs", "--since", since, "etcd"], check=False)
        return r.stdout + r.stderr
    finally:
        ex.close()


def x509_errors(lab: Lab, since: str) -> dict[str, list[str]]:
    return {h: X509.findall(etcd_log(lab, h, since)) for h in ("master1", "master2", "master3")}


def wait_x509(lab: Lab, since: str, timeout: float = 30) -> dict[str, list[str]]:
    end = time.monotonic() + timeout
    while True:
        got = x509_errors(lab, since)
        if any(got.values()) or time.monotonic() > end:
            return got
        time.sleep(1)


def test_a_certificate_dated_ahead_is_refused_by_etcd_found_and_repaired(running_lab: Lab) -> None:
    lab = running_lab
    since = f"{int(time.time()) - 1}"
    try:
        check_fault_found_and_renewed(lab, since)
    finally:
        lab.etcd_dr("fault", "heal", "--host", "master1", timeout=180)  # never leave it to the next test


def check_fault_found_and_renewed(lab: Lab, since: str) -> None:
    inv = load_inventory(lab.cfg.inventory_path)
    member = inv.etcd.cert_path(inv.host("master1"))
    r = lab.etcd_dr("fault", "cert-not-yet-valid", "--host", "master1", "--yes", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (fault,) = json.loads(r.stdout)["faults"]

    t0 = time.monotonic()
    seen = wait_x509(lab, since)
    print(f"x509 errors found {time.monotonic() - t0:.1f} s after the fault command returned")
    assert any(seen.values()), "no x509 error in any member's etcd log"
    print("etcd's own words:", next(v[0] for v in seen.values() if v), {h: len(v) for h, v in seen.items()})

    r = lab.etcd_dr("hosts", "clock", "--json")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["skewed"] == []  # the clocks are right: the certificate is to blame
    (bad,) = rep["bad_certs"]
    assert bad["host"] == "master1" and bad["path"] == member and bad["verdict"] == "not-yet-valid"
    assert X509.fullmatch(bad["problem"]), bad["problem"]
    assert "issued on a machine whose clock was ahead" in bad["fix"]

    # while master1 is out, renewing master2 would cost quorum: refused, nothing changed
    r = lab.etcd_dr("cert", "renew", "--host", "master2", "--yes", "--json")
    assert r.returncode == 1 and "would cost quorum" in json.loads(r.stdout)["reason"], r.stdout

    t0 = time.monotonic()
    r = lab.etcd_dr("cert", "renew", "--host", "master1", "--yes", "--json", timeout=180)
    renew_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    states = [s["state"] for s in out["steps"]]
    # the wait is skipped when the restarted member already answers with a leader at its first look
    assert states[:2] == ["done", "done"] and states[2] in ("done", "skipped"), out["steps"]
    # then the peers see the new certificate: a 5 s window with no x509 error in any member's log.
    # Handshakes begun around the restart can still be logged in its first second (seen once in CI,
    # two lines a peer, all in one second), so the window may start again, for 20 s at most; the old
    # certificate still served would fail every window (etcd's peers retry every ~100 ms).
    end = time.monotonic() + 20
    while True:
        after = f"{int(time.time()) + 1}"
        time.sleep(5)
        got = x509_errors(lab, after)
        if not any(got.values()) or time.monotonic() > end:
            break
    assert got == {"master1": [], "master2": [], "master3": []}
    r = lab.etcd_dr("hosts", "clock", "--json")
    assert r.returncode == 0, json.loads(r.stdout)["verdict"]
    ex = executor_for(inv, "master1")
    try:  # the fault's pair kept beside the new one (.bak-<ts>), the one before the fault too
        ls = ex.run(["ls", inv.etcd.cert_dir]).stdout.split()
        name = f"kube-etcd-{inv.host('master1').address_dashed}.pem"
        assert any(f.startswith(f"{name}.bak-") for f in ls) and f"{name}.before-{fault['id']}" in ls, ls
    finally:
        ex.close()

    # heal finds the certificate valid (renewed since): nothing to put back, the member answers
    r = lab.etcd_dr("fault", "heal", "--host", "master1", "--json", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [s["state"] for s in json.loads(r.stdout)["steps"]] == ["skipped", "skipped"]
    print(f"cert renew --host master1 (whole command): {renew_s:.1f} s")


def test_renew_all_restarts_one_member_at_a_time_and_keeps_quorum(running_lab: Lab) -> None:
    """Every voter renewed on a healthy cluster: a writer through the cluster never loses quorum for
    long (one member restarts at a time, each waited for), every member serves its new certificate."""
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    serials = {}
    for h in ("master1", "master2", "master3"):
        ex = executor_for(inv, h)
        try:
            serials[h] = ex.get(inv.etcd.cert_path(inv.host(h)))
        finally:
            ex.close()
    r = lab.etcd_dr("cert", "renew", "--all", "--plan", "--json")
    assert r.returncode == 0, r.stderr
    assert [s["host"] for s in json.loads(r.stdout)["plan"]["steps"][::3]] == [
        "master1",
        "master2",
        "master3",
    ]
    t0 = time.monotonic()
    r = lab.etcd_dr("cert", "renew", "--all", "--yes", "--json", timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(s["state"] in ("done", "skipped") for s in json.loads(r.stdout)["steps"])
    for h in ("master1", "master2", "master3"):
        ex = executor_for(inv, h)
        try:
            assert ex.get(inv.etcd.cert_path(inv.host(h))) != serials[h], h  # a new certificate
        finally:
            ex.close()
    r = lab.etcd_dr("status", "--json", "--no-ssh")
    out = json.loads(r.stdout)
    assert out["quorum"] and out["voters_answering"] == 3, out["verdict"]
    print(f"cert renew --all, 3 voters (whole command): {took:.1f} s")
