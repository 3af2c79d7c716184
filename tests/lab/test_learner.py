"""Certificate issue and learner add on the real lab: 3.4 voters, a 3.5 learner on node1 (as in the
source incident), promote, idempotent re-runs, rollback of a failed start, the Prefect flow, and
`lab up --learner`. Every test leaves the lab as it found it: three voters, node1 no member."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from etcd_dr.certissue import CertRefused, issue_member_cert, load_ca, read_host_clock
from etcd_dr.etcd.errors import UnhealthyCluster
from etcd_dr.etcdbin import ensure_binaries
from etcd_dr.executor import executor_for
from etcd_dr.inventory import Inventory, inventory_to_dict, load_inventory
from etcd_dr.lab import images, lifecycle
from etcd_dr.lab.config import Build
from etcd_dr.learner import LearnerOptions, add_learner, remove_learner
from etcd_dr.plans import StepState
from etcd_dr.state import client_for

from .conftest import Lab

pytestmark = pytest.mark.lab

NODE1_CERT = "/etc/kubernetes/ssl/kube-etcd-{dashed}.pem"


def cli(lab: Lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return lab.etcd_dr(*args, timeout=timeout)


def ssh(inv: Inventory, host: str, script: str) -> str:
    with executor_for(inv, host) as ex:
        return ex.run(["sh", "-c", script], check=False).stdout


def member_names(inv: Inventory) -> list[tuple[str, bool]]:
    with client_for(inv) as c:
        return sorted((m.name, m.is_learner) for m in c.member_list(linearizable=True))


@pytest.fixture
def image35(running_lab: Lab) -> str:
    """An etcd 3.5 image on node1 (the learner's), built from Debian 13's binaries (loaded once:
    `images.load` skips a host that has the tag)."""
    bins = ensure_binaries("3.5")
    rootfs = images.build_rootfs(bins, running_lab.cfg.images_dir / f"etcd-{bins.version}.tar")
    tag = images.image_tag(bins)
    images.load(lifecycle.console(running_lab.state, "node1"), rootfs, tag, visible_on_host=True)
    return tag


@pytest.fixture
def learner_inv(running_lab: Lab, image35: str, tmp_path: Path) -> Iterator[Path]:
    """The lab's inventory with node1 as etcd-learner running etcd 3.5; node1 is taken out again after."""
    inv = load_inventory(running_lab.cfg.inventory_path)
    d = inventory_to_dict(inv)  # absolute paths: the same keys, certs and audit log as the lab's
    for h in d["hosts"]:
        if h["name"] == "node1":
            h["roles"], h["etcd_image"] = ["etcd-learner", "worker"], image35
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    yield path
    remove_learner(load_inventory(path), "node1")  # idempotent: nothing to do when a test cleaned up
    assert member_names(inv) == [("etcd-master1", False), ("etcd-master2", False), ("etcd-master3", False)]


def test_cert_issue_over_ssh_chain_verifies_with_openssl(running_lab: Lab, tmp_path: Path) -> None:
    inv = load_inventory(running_lab.cfg.inventory_path)
    node1 = inv.host("node1")
    t0 = time.monotonic()
    r = cli(running_lab, "cert", "issue", "--host", "node1", "--dns", "node1.dc2.lab", "--json")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    print(f"cert issue over SSH (CLI, CA read from master1): {took:.2f} s, core {out['duration_s']} s")
    assert out["outcome"] == "issued" and out["cert"] == NODE1_CERT.format(dashed=node1.address_dashed)
    assert abs(out["host_clock_skew_s"]) < 1.0

    got = ssh(inv, "node1", f"stat -c %a {out['key']}; cat {out['ca']}; echo @@SEP@@; cat {out['cert']}")
    mode, rest = got.split("\n", 1)
    assert mode == "600"
    ca_pem, cert_pem = rest.split("@@SEP@@\n")
    (tmp_path / "ca.pem").write_text(ca_pem)
    (tmp_path / "cert.pem").write_text(cert_pem)
    # an independent checker: openssl (only in the test)
    v = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    x = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(tmp_path / "cert.pem"),
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for want in (f"IP Address:{node1.address}", "IP Address:127.0.0.1", "DNS:node1", "DNS:node1.dc2.lab"):
        assert want in x
    assert "TLS Web Server Authentication" in x and "TLS Web Client Authentication" in x

    again = cli(running_lab, "cert", "issue", "--host", "node1", "--dns", "node1.dc2.lab", "--json")
    assert again.returncode == 0, again.stderr
    kept = json.loads(again.stdout)
    assert kept["outcome"] == "kept" and kept["serial"] == out["serial"]
    assert kept["reason"].startswith("kept kube-etcd-")


def test_not_yet_valid_certificate_is_refused_with_the_x509_message(running_lab: Lab) -> None:
    """NOTES: Go ignores libfaketime and `date -s` is refused in a lab host: shift the window."""
    inv = load_inventory(running_lab.cfg.inventory_path)
    ca = load_ca(inv)
    with executor_for(inv, "node2") as ex:
        before = ssh(inv, "node2", "ls /etc/kubernetes/ssl")
        host_now = read_host_clock(ex).now
        with pytest.raises(CertRefused) as e:
            issue_member_cert(inv, "node2", ca, executor=ex, not_before=host_now + dt.timedelta(hours=1))
    msg = str(e.value)
    assert "x509: certificate has expired or is not yet valid: current time " in msg
    assert " is before " in msg and "fix: " in msg
    assert ssh(inv, "node2", "ls /etc/kubernetes/ssl") == before  # nothing written


def test_35_learner_on_34_voters_added_caught_up_promoted(running_lab: Lab, learner_inv: Path) -> None:
    inv = load_inventory(learner_inv)
    plan = cli(
        running_lab, "learner", "add", "--host", "node1", "--promote", "--plan", "-i", str(learner_inv)
    )
    assert plan.returncode == 0, plan.stderr
    assert "node1 is not a member: add it as a learner running lab/etcd:3.5" in plan.stdout
    assert member_names(inv)[-1][0] == "etcd-master3"  # the dry run changed nothing

    t0 = time.monotonic()
    r = cli(running_lab, "learner", "add", "--host", "node1", "--promote", "--json", "-i", str(learner_inv))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    steps = {s["action"]: s["status"] for s in out["steps"]}
    # the certificate of the cert-issue test (a superset of the SANs) is kept when that test ran
    assert steps.pop("issue-cert") in ("done", "skipped")
    assert steps == {
        "member-add-learner": "done",
        "start-etcd": "done",
        "wait-caught-up": "done",
        "promote": "done",
    }
    print(
        f"learner add 3.5 on 3.4 + promote (CLI): {took:.2f} s; member add to caught up {out['join_s']} s, "
        f"caught up {out['caught_up_s']} s after start"
    )
    st = json.loads(cli(running_lab, "status", "--json", "-i", str(learner_inv)).stdout)
    node1 = next(m for m in st["members"] if m["name"] == "node1")
    assert node1["is_learner"] is False and node1["version"].startswith("3.5.")
    assert {m["version"][:3] for m in st["members"] if m["name"] != "node1"} == {"3.4"}
    assert st["voters"] == 4 and st["quorum"] is True

    # re-run: nothing to do, still four members
    again = cli(
        running_lab, "learner", "add", "--host", "node1", "--promote", "--json", "-i", str(learner_inv)
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verdict"].startswith("node1 is already a voter of lab-")
    assert len(member_names(inv)) == 4

    audit = cli(running_lab, "audit", "verify", "--inventory", str(learner_inv), "--json")
    assert json.loads(audit.stdout)["ok"] is True
    records = [json.loads(x) for x in Path(inv.audit_log).read_text().splitlines()]
    assert {"member-add", "member-promote"} <= {rec["action"] for rec in records}
    assert not any("PRIVATE KEY" in json.dumps(rec) for rec in records)


def test_rerun_after_a_crash_between_add_and_start_adds_no_second_member(
    running_lab: Lab, learner_inv: Path
) -> None:
    inv = load_inventory(learner_inv)
    peer = inv.peer_url(inv.host("node1"))
    end = time.monotonic() + 20
    with client_for(inv) as c:  # what a run that died right after its member add left behind
        while True:
            try:
                c.member_add([peer], is_learner=True)
                break
            except UnhealthyCluster:
                assert time.monotonic() < end
                time.sleep(0.5)
    r = cli(running_lab, "learner", "add", "--host", "node1", "--json", "-i", str(learner_inv))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    steps = {s["action"]: s["status"] for s in out["steps"]}
    assert steps["member-add-learner"] == "skipped" and steps["start-etcd"] == "done"
    assert out["plan"]["reason"].endswith(": continue")
    assert sorted(member_names(inv)) == [
        ("etcd-master1", False),
        ("etcd-master2", False),
        ("etcd-master3", False),
        ("etcd-node1", True),
    ]


def test_failed_start_rolls_back_then_a_retry_through_the_flow_works(
    running_lab: Lab, learner_inv: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness
) -> None:
    import etcd_dr.certissue as certissue

    inv = load_inventory(learner_inv)
    real = certissue.member_sans

    def wrong_ip(host, ips=(), dns=()):
        # fault injection: the certificate is issued for an address that is not node1's
        _, names = real(host, ips, dns)
        return ["10.231.255.99", "127.0.0.1"], names

    monkeypatch.setattr(certissue, "member_sans", wrong_ip)
    before = ssh(inv, "node1", "ls -d /var/lib/etcd.bak-* 2>/dev/null | wc -l").strip()
    res = add_learner(inv, "node1", LearnerOptions(catchup_timeout=20))
    monkeypatch.undo()
    assert not res.ok
    failed = [r for r in res.results if r.state is StepState.FAILED]
    assert [r.step.action.value for r in failed] in (["start-etcd"], ["wait-caught-up"])
    assert "certificate does not verify" in failed[0].detail, failed[0].detail
    assert res.rollback is not None and res.rollback.ok, res.rollback
    print(f"failed start + rollback: {res.duration_s:.2f} s; {res.rollback.sentence}")
    assert any(d.startswith("member ") and d.endswith(" removed") for d in res.rollback.done)
    assert member_names(inv) == [("etcd-master1", False), ("etcd-master2", False), ("etcd-master3", False)]
    running = ssh(inv, "node1", "docker ps --filter name=^etcd$ --format '{{.Names}}'")
    assert running.strip() == ""
    after = ssh(inv, "node1", "ls -d /var/lib/etcd.bak-* 2>/dev/null | wc -l; test -e /var/lib/etcd; echo $?")
    n_bak, exists = after.split()
    assert int(n_bak) == int(before) + 1 and exists == "1"  # moved aside, not deleted, none left in place
    assert "rolled back" in res.verdict

    # the retry starts clean: the flow re-issues the certificate (wrong SAN) and adds the learner
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    from flows.add_learner import add_learner_flow

    out = add_learner_flow(host="node1", inventory_path=str(learner_inv))
    assert out["ok"] and {s["action"]: s["status"] for s in out["steps"]}["issue-cert"] == "done"
    assert ("etcd-node1", True) in member_names(inv)

    async def artifact() -> str:
        # ship the flow's logs now: queued ones would be sent after the test server stopped, and
        # the log worker retries a dead server for a minute at interpreter exit
        await APILogHandler.aflush()
        async with get_client() as c:
            arts = await c.read_artifacts()
            return next(a.data for a in arts if a.key and a.key.startswith("etcd-add-learner-lab-"))

    import asyncio

    md = asyncio.run(artifact())
    assert "| 2 | member-add-learner | no |" in md and "**Outcome.** node1 joined" in md


def test_lab_up_learner_gives_a_learner_in_status(lab: Lab) -> None:
    t0 = time.monotonic()
    r = lab.cli("up", "--learner", "--learner-etcd", "3.5", timeout=180)
    took = time.monotonic() - t0
    try:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        print(f"lab up --learner --learner-etcd 3.5: {took:.1f} s")
        assert "node1 joined lab-" in r.stdout
        st = cli(lab, "status", "--json")
        out = json.loads(st.stdout)
        node1 = next(m for m in out["members"] if m["name"] == "node1")
        assert node1["is_learner"] is True and node1["reachable"] and node1["version"].startswith("3.5.")
        assert out["voters"] == 3 and out["verdict"].endswith("; learner node1 answering")
        inv = yaml.safe_load(lab.cfg.inventory_path.read_text())
        n1 = next(h for h in inv["hosts"] if h["name"] == "node1")
        assert n1["roles"] == ["etcd-learner", "worker"] and n1["etcd_image"].startswith("lab/etcd:3.5.")
        assert lab.state.build is Build.COMPLETE  # recorded only once node1 joined
    finally:
        lifecycle.up(lab.cfg, say=lambda m: None)  # back to three voters for the other tests


def test_update_inventory_adds_the_role_then_the_learner(
    running_lab: Lab, image35: str, tmp_path: Path
) -> None:
    """node1 a worker in a commented inventory: refused with the diff, then `--update-inventory`
    adds the role in place (the comment kept) and the learner joins."""
    inv = load_inventory(running_lab.cfg.inventory_path)
    d = inventory_to_dict(inv)
    for h in d["hosts"]:
        if h["name"] == "node1":
            h["roles"], h["etcd_image"] = ["worker"], image35
    path = tmp_path / "inventory.yaml"
    text = "# node1 joins from the second data center\n" + yaml.safe_dump(
        d, sort_keys=False, default_flow_style=None
    )
    path.write_text(text)
    try:
        refused = cli(running_lab, "learner", "add", "--host", "node1", "-i", str(path))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "the inventory change to make (--update-inventory applies it):" in refused.stdout
        assert path.read_text() == text and member_names(inv)[-1][0] == "etcd-master3"

        t0 = time.monotonic()
        r = cli(running_lab, "learner", "add", "--host", "node1", "--update-inventory", "-i", str(path))
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        changed = [ln for ln in r.stdout.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        assert changed == ["-  roles: [worker]", "+  roles: [worker, etcd-learner]"], r.stdout
        assert f"updated {path} (the old one kept as inventory.yaml.bak-" in r.stdout
        new = path.read_text()
        assert new == text.replace(
            "  roles: [worker]\n", "  roles: [worker, etcd-learner]\n", 1
        )  # node1 first
        assert load_inventory(path).host("node1").is_learner
        assert len(member_names(inv)) == 4 and sum(learner for _, learner in member_names(inv)) == 1
        print(f"learner add --update-inventory (CLI, edit + add, no promote): {took:.2f} s")
    finally:
        remove_learner(load_inventory(path), "node1")
    assert member_names(inv) == [("etcd-master1", False), ("etcd-master2", False), ("etcd-master3", False)]
