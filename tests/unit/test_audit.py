"""The audit log: a valid chain; edits, deletions and reorderings found at the right line; secrets
never reach the file; concurrent writers (threads and processes) keep the chain valid."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from etcd_dr import audit as audit_mod
from etcd_dr.audit import AuditLog, current_flow_run_id, redact, redact_argv, register_secret, verify

# A throwaway key made for this test (never used anywhere): the shape of what must not leak.
PEM = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBdBFvQ7L0Gq0Xw0Vd2d0bXNm2gX8y8q2m3cS1rU3Ef7gAAAJgrk9KBK5PS
-----END OPENSSH PRIVATE KEY-----
"""
PEM_BODY = [ln for ln in PEM.splitlines() if not ln.startswith("-----")]


def write_n(path: Path, n: int) -> AuditLog:
    log = AuditLog(path, cluster="lab")
    for i in range(n):
        log.command(host=f"m{i % 3}", argv=["echo", str(i)], rc=0, duration_s=0.01 * i, reason="t")
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_records_chain(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    log = write_n(p, 3)
    log.event(host="m1", action="member-add", outcome="ok", reason="learner for node1", member_id="0x21")
    log.command(host="m2", argv=["sleep", "9"], rc=None, duration_s=1.0)
    recs = [json.loads(x) for x in lines(p)]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prev"] == hashlib.sha256(b"").hexdigest()
    for prev_line, r in zip(lines(p), recs[1:], strict=False):
        assert r["prev"] == hashlib.sha256(prev_line.rstrip(b"\n")).hexdigest()
    assert recs[3]["action"] == "member-add" and recs[3]["member_id"] == "0x21"
    assert (recs[4]["outcome"], recs[4]["rc"]) == ("timeout", None)
    assert recs[0]["time"].endswith("Z") and recs[0]["cluster"] == "lab"
    assert set(recs[0]) >= {
        "time", "seq", "flow_run_id", "cluster", "host", "action", "argv", "rc", "duration_s", "outcome",
        "reason", "prev", "hash",
    }  # fmt: skip
    res = verify(p)
    assert (res.ok, res.records, res.first_bad_line) == (True, 5, None)
    assert res.last_hash == hashlib.sha256(lines(p)[-1].rstrip(b"\n")).hexdigest()


def test_flow_run_id_from_contextvar(tmp_path: Path):
    log = AuditLog(tmp_path / "a.jsonl")
    token = current_flow_run_id.set("run-123")
    try:
        rec = log.command(host="h", argv=["true"], rc=0, duration_s=0.0)
    finally:
        current_flow_run_id.reset(token)
    assert rec["flow_run_id"] == "run-123"
    assert log.command(host="h", argv=["true"], rc=0, duration_s=0.0)["flow_run_id"] is None


def _edit(ls: list[bytes]) -> list[bytes]:
    ls[2] = ls[2].replace(b'"echo","2"', b'"echo","X"')
    return ls


def _edit_keep_hash_consistent(ls: list[bytes]) -> list[bytes]:
    # an editor who recomputes the record's own hash: still caught, by the next line's prev
    rec = json.loads(ls[2])
    rec["argv"] = ["rm", "-rf", "/"]
    del rec["hash"]
    ls[2] = audit_mod._seal(rec) + b"\n"
    return ls


@pytest.mark.parametrize(
    ("mutate", "bad_line", "phrase"),
    [
        (_edit, 3, "hash does not match"),
        (_edit_keep_hash_consistent, 4, "prev does not match line 3"),
        (lambda ls: ls[:2] + ls[3:], 3, "prev does not match line 2"),  # line 3 deleted
        (lambda ls: ls[1:], 1, "prev does not match the start"),  # first line deleted
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "prev does not match line 1"),  # reordered
        (lambda ls: [*ls[:4], ls[4].rstrip(b"\n")], 5, "incomplete"),  # torn last write
        (lambda ls: [*ls[:3], b"garbage\n", *ls[3:]], 4, "not an audit record"),
    ],
    ids=["edited", "edited-rehashed", "deleted", "first-deleted", "reordered", "torn", "inserted"],
)
def test_tampering_is_found_at_the_first_bad_line(tmp_path: Path, mutate, bad_line, phrase):
    p = tmp_path / "a.jsonl"
    write_n(p, 5)
    p.write_bytes(b"".join(mutate(lines(p))))
    res = verify(p)
    assert not res.ok
    assert res.first_bad_line == bad_line, res
    assert phrase in res.reason
    assert res.records == bad_line - 1


def test_writer_continues_after_a_torn_line(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    write_n(p, 2)
    p.write_bytes(p.read_bytes() + b'{"time":"cut off')  # crash mid-write
    AuditLog(p).command(host="h", argv=["true"], rc=0, duration_s=0)
    ls = lines(p)
    assert len(ls) == 4 and ls[3].startswith(b'{"time"')  # our record on a line of its own
    res = verify(p)
    assert (res.ok, res.first_bad_line) == (False, 3)


def test_secrets_never_reach_the_file(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    log = AuditLog(p)
    register_secret("s3cr3t-t0ken-value")
    argvs = [
        ["sh", "-c", f"echo '{PEM}' > /etc/key"],
        ["etcdctl", "--password=hunter22", "--user", "root:pw123456", "get", "x"],
        ["curl", "-H", "Authorization: Bearer abc.def.ghi", "--token", "tok999"],
    ]
    for argv in argvs:
        log.command(host="h", argv=argv, rc=0, duration_s=0)
    log.command(
        host="h", argv=["app", "--key-data=QUJDREVGRw==", "ETCDCTL_PASSWORD=pw777"], rc=0, duration_s=0
    )
    log.command(
        host="h", argv=["echo", "s3cr3t-t0ken-value"], rc=0, duration_s=0, reason="uses s3cr3t-t0ken-value"
    )
    log.event(
        host="h", action="put", outcome="ok", note=f"content {PEM}", nested={"k": ["s3cr3t-t0ken-value"]}
    )
    raw = p.read_bytes()
    for secret in [
        *PEM_BODY,
        "hunter22",
        "pw123456",
        "abc.def.ghi",
        "tok999",
        "QUJDREVGRw",
        "pw777",
        "s3cr3t-t0ken",
    ]:
        assert secret.encode() not in raw, secret
    # and what is not secret stays readable
    assert (
        b"--user" in raw and b"root:***" in raw and b"etcdctl" in raw and b"BEGIN OPENSSH PRIVATE KEY" in raw
    )
    assert verify(p).ok


RSA = "-----BEGIN RSA PRIVATE KEY-----"
RSA_END = "-----END RSA PRIVATE KEY-----"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
PATHS = "--cert=/etc/ssl/c.pem --key=/etc/ssl/k.pem"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--password=x1 --name=m1", "--password=*** --name=m1"),
        (f"--client-secret s1 {PATHS}", f"--client-secret *** {PATHS}"),  # key *paths* stay
        ("authorization: Basic dXNlcjpwYXNz", "authorization: ***"),
        ("GITHUB_TOKEN=ghp_x ls", "GITHUB_TOKEN=*** ls"),
        (f"{RSA}\nMIIE\n{RSA_END}", f"{RSA}***{RSA_END}"),
        (
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQ truncated",
            "-----BEGIN EC PRIVATE KEY-----***-----END EC PRIVATE KEY-----",
        ),
        (CERT, CERT),  # a certificate is public
    ],
)
def test_redact(text: str, expected: str):
    assert redact(text) == expected


def test_redact_argv_masks_the_value_after_a_secret_flag():
    assert redact_argv(["etcdctl", "--password", "pw", "--user", "u:p", "get", "k"]) == [
        "etcdctl", "--password", "***", "--user", "u:***", "get", "k",
    ]  # fmt: skip


def test_concurrent_threads_keep_the_chain(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    log = AuditLog(p, fsync=False)
    logs = [log, AuditLog(p, fsync=False)]  # two AuditLog objects on one file in one process, too

    def work(k: int) -> None:
        for i in range(50):
            logs[k % 2].command(host=f"t{k}", argv=["n", str(i)], rc=0, duration_s=0)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    res = verify(p)
    assert (res.ok, res.records) == (True, 300), res


def _proc_writer(path: str, tag: str, n: int) -> None:
    log = AuditLog(path, fsync=False)
    for i in range(n):
        log.command(host=tag, argv=["n", str(i)], rc=0, duration_s=0)


def test_concurrent_processes_keep_the_chain(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_proc_writer, args=(str(p), f"p{k}", 150)) for k in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    res = verify(p)
    assert (res.ok, res.records) == (True, 300), res
    hosts = [json.loads(x)["host"] for x in lines(p)]
    assert hosts.count("p0") == 150 and hosts.count("p1") == 150


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "audit", "verify", *args], capture_output=True, text=True
    )


def test_cli_verify(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    write_n(p, 4)
    r = _cli(str(p))
    assert (r.returncode, r.stdout.strip()) == (0, "audit log OK: 4 records")
    r = _cli(str(p), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["records"] == 4
    ls = lines(p)
    p.write_bytes(b"".join([ls[0], ls[2], ls[1], ls[3]]))
    r = _cli(str(p))
    assert r.returncode == 1
    assert r.stdout.startswith("audit log BROKEN at line 2: prev does not match line 1")
    r = _cli(str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "no such audit log" in r.stderr


def test_registered_key_does_not_defeat_the_pem_rule(tmp_path: Path):
    """Registering a whole PEM key (as the SSH executor does) must not stop a different key's block,
    with the same armor lines and the same common first line, from being masked whole."""
    other = PEM.replace("AAAAJgrk9KBK5PS", "AAAAJgrk9KBXXXX")
    register_secret(other)
    out = redact(f"x {PEM} y")
    assert not any(b in out for b in PEM_BODY)
    assert "-----BEGIN OPENSSH PRIVATE KEY-----***-----END OPENSSH PRIVATE KEY-----" in out


def test_armor_alone_is_not_registered(tmp_path: Path):
    """A stub key file holding only an armor line (test inventories, a truncated copy) registered as
    a secret would mask every PEM block's first line and defeat the PEM rule."""
    register_secret("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    out = redact(f"x {PEM} y")
    assert "-----BEGIN OPENSSH PRIVATE KEY-----***-----END OPENSSH PRIVATE KEY-----" in out
