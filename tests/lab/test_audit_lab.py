"""The audit trail on the real lab: every host command leaves a record, the chain verifies, an
edited line is named, and no private key of the lab (SSH client and host keys, kube-ca, members,
etcd-dr's client) appears in any record."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from etcd_dr.audit import verify
from etcd_dr.executor import executor_for
from etcd_dr.inventory import load_inventory

from .conftest import Lab

pytestmark = pytest.mark.lab

_B64_LINE = re.compile(rb"^[A-Za-z0-9+/=]{40,}$")


def _private_key_lines(lab: Lab) -> set[bytes]:
    """Every base64 line of every private key file under the lab's dir."""
    lines: set[bytes] = set()
    for f in lab.cfg.dir.rglob("*"):
        if not f.is_file() or f.stat().st_size > 64_000 or "ovl" in f.parts or "docker-data" in f.parts:
            continue
        data = f.read_bytes()
        if b"PRIVATE KEY-----" in data:
            lines |= {ln.strip() for ln in data.splitlines() if _B64_LINE.match(ln.strip())}
    return lines


def test_commands_are_audited_without_key_material(running_lab: Lab, tmp_path) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.dir / "inventory.yaml")
    log = inv.audit_log
    before = len(log.read_text().splitlines()) if log.exists() else 0
    ex = executor_for(inv, "master2")
    try:
        ex.run(["docker", "ps", "--format", "{{.Names}}"], reason="test: list containers")
        failed = ex.run(["sh", "-c", "exit 3"], check=False, reason="test: a failing command")
        assert failed.rc == 3
        # a key travels in the file's bytes, never in argv or the record
        key = (lab.cfg.dir / "certs").glob("*key*.pem").__next__().read_bytes()
        ex.put(key, "/root/copied-key.pem", mode=0o600, reason="test: copy a key")
        assert ex.get("/root/copied-key.pem") == key
    finally:
        ex.close()
    records = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    by_reason = {r["reason"]: r for r in records}
    assert by_reason["test: list containers"]["outcome"] == "ok"
    assert by_reason["test: list containers"]["host"] == "master2"
    assert by_reason["test: a failing command"]["rc"] == 3
    assert by_reason["test: a failing command"]["outcome"] == "failed"
    assert by_reason["test: copy a key"]["action"] == "put"

    # the whole log, lab provisioning included (certs written to hosts), holds no key material
    keys = _private_key_lines(lab)
    assert len(keys) >= 10  # client key, 5 host keys, kube-ca, members, etcd-dr's client
    text = log.read_bytes()
    leaked = [k[:12] for k in keys if k in text]
    assert not leaked, f"key material in the audit log: {leaked}"

    assert verify(log).ok
    r = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "audit", "verify", str(log), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True

    # an edited line is detected and named (1-based): the failing command now claims success
    lines = log.read_text().splitlines(keepends=True)
    k = before + next(i for i, r in enumerate(records) if r["reason"] == "test: a failing command")
    assert '"rc":3' in lines[k]
    lines[k] = lines[k].replace('"rc":3', '"rc":0')
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(lines))
    r = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "audit", "verify", str(edited)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1
    assert f"BROKEN at line {k + 1}" in r.stdout, r.stdout
