"""SSHExecutor against a real sshd on loopback (and in a network namespace for dead hosts)."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from etcd_dr.audit import AuditLog, verify
from etcd_dr.errors import CommandError, HostKeyError, InputError, TransportError
from etcd_dr.executor import CommandResult, Executor, SSHExecutor
from etcd_dr.inventory import Host, Role

pytestmark = pytest.mark.ssh


@pytest.fixture
def audit(tmp_path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl", cluster="test")


@pytest.fixture
def ex(sshd, audit: AuditLog):
    e = SSHExecutor(sshd.host(), sshd.settings(), audit=audit)
    yield e
    e.close()


def records(audit: AuditLog) -> list[dict]:
    return [json.loads(line) for line in audit.path.read_text().splitlines()]


def _procs_with_cmdline(needle: bytes) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
                state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cmd == needle and state != "Z":  # a zombie is dead (reaped late here, see NOTES)
                pids.append(int(d))
    return pids


def test_is_an_executor(ex):
    assert isinstance(ex, Executor)


def test_run_returns_rc_stdout_stderr(ex, audit):
    r = ex.run(["sh", "-c", "echo out; echo err >&2; exit 0"], reason="smoke")
    assert isinstance(r, CommandResult)
    assert (r.rc, r.stdout, r.stderr) == (0, "out\n", "err\n")
    r = ex.run(["sh", "-c", "echo nope >&2; exit 3"], check=False)
    assert (r.rc, r.stderr, r.ok) == (3, "nope\n", False)
    recs = records(audit)
    assert [(x["action"], x["argv"][0], x["rc"], x["outcome"]) for x in recs] == [
        ("command", "sh", 0, "ok"),
        ("command", "sh", 3, "failed"),
    ]
    assert recs[0]["reason"] == "smoke" and recs[0]["cluster"] == "test" and recs[0]["host"] == "h1"


def test_argv_is_quoted_not_interpreted(ex, tmp_path):
    marker = tmp_path / "injected"
    arg = f"a b; touch {marker}; $(touch {marker}) 'q' \"d\" \\"
    assert ex.run(["printf", "%s", arg]).stdout == arg
    assert not marker.exists()


def test_connection_is_reused(ex):
    ex.run(["true"])
    t1 = ex._client.get_transport()
    ex.run(["true"])
    assert ex._client.get_transport() is t1


def test_command_error_vs_transport_error(ex, sshd):
    with pytest.raises(CommandError) as ei:
        ex.run(["sh", "-c", "echo boom >&2; exit 7"])
    assert not isinstance(ei.value, TransportError)
    assert ei.value.rc == 7 and "exited 7" in str(ei.value) and "boom" in str(ei.value)

    closed = Host("gone", "127.0.0.1", frozenset({Role.ETCD}), port=1)  # nothing listens on port 1
    with SSHExecutor(closed, sshd.settings()) as e, pytest.raises(TransportError) as ti:
        e.run(["true"])
    assert not isinstance(ti.value, CommandError)
    assert str(ti.value).startswith("gone unreachable:") and "refused" in str(ti.value)


def test_stdin_bytes(ex):
    data = os.urandom(300_000)  # bigger than the SSH window: sending and reading interleave
    r = ex.run(["sha256sum"], stdin=data)
    import hashlib

    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert ex.run(["cat"]).stdout == ""  # no stdin: EOF at once, not a hang


def test_wrong_host_key_is_refused_and_nothing_runs(sshd, tmp_path, client_key):
    other = tmp_path / "other_host_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line(" ".join(Path(f"{other}.pub").read_text().split()[:2])))
    marker = tmp_path / "ran"
    audit = AuditLog(tmp_path / "a.jsonl")
    with SSHExecutor(sshd.host("m1"), sshd.settings(kh), audit=audit) as e, pytest.raises(HostKeyError) as ei:
        e.run(["touch", str(marker)])
    msg = str(ei.value)
    assert "m1" in msg and str(kh) in msg and "does not match" in msg and "ssh-keygen -R" in msg
    assert not marker.exists()
    assert records(audit)[0]["outcome"] == "unreachable"


def test_unknown_host_is_refused(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("[10.9.9.9]:22 " + sshd.host_pub + "\n")  # other hosts only
    marker = tmp_path / "ran"
    with SSHExecutor(sshd.host("m2"), sshd.settings(kh)) as e, pytest.raises(HostKeyError) as ei:
        e.run(["touch", str(marker)])
    msg = str(ei.value)
    assert "m2" in msg and "is not in" in msg and str(kh) in msg and "SHA256:" in msg
    assert not marker.exists()
    # and the key was not added anywhere
    assert kh.read_text() == "[10.9.9.9]:22 " + sshd.host_pub + "\n"


def test_missing_known_hosts_is_refused(sshd, tmp_path):
    with SSHExecutor(sshd.host(), sshd.settings(tmp_path / "nope")) as e, pytest.raises(HostKeyError) as ei:
        e.run(["true"])
    assert "does not exist" in str(ei.value)


def test_put_get_roundtrip_with_mode(ex, tmp_path, audit):
    target = tmp_path / "sub" / "secret.pem"
    target.parent.mkdir()
    payload = os.urandom(70_000)
    ex.put(payload, str(target), mode=0o600, reason="install key")
    st = target.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert target.read_bytes() == payload
    assert ex.get(str(target)) == payload
    # replace an existing file atomically, with a different mode; no temp file left behind
    ex.put(b"v2", str(target), mode=0o640)
    assert target.read_bytes() == b"v2" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret.pem"]
    puts = [r for r in records(audit) if r["action"] == "put"]
    assert [(r["path"], r["mode"], r["size"], r["outcome"]) for r in puts] == [
        (str(target), "0600", 70_000, "ok"),
        (str(target), "0640", 2, "ok"),
    ]
    assert payload.hex()[:32] not in audit.path.read_text()


def test_put_into_missing_dir_is_a_command_error(ex, tmp_path, audit):
    with pytest.raises(CommandError):
        ex.put(b"x", str(tmp_path / "no" / "such" / "dir" / "f"))
    assert records(audit)[-1]["outcome"] == "failed"


def test_get_missing_file_is_a_command_error(ex, tmp_path):
    with pytest.raises(CommandError) as ei:
        ex.get(str(tmp_path / "missing"))
    assert "get " in str(ei.value)


def test_a_closed_sftp_channel_is_a_lost_connection_retried_not_a_file_error(ex, tmp_path):
    """paramiko says "Socket is closed" (an OSError without errno) when the SFTP channel went away
    under a reader, e.g. closed by another thread's timeout: retried on a new connection, never
    reported as the file's fault (a readiness check once called a certificate unreadable so)."""
    f = tmp_path / "cert.pem"
    f.write_text("pem")
    assert ex.get(str(f)) == b"pem"
    ex._sftp.get_channel().close()  # the SFTP channel is gone; the executor still holds it
    assert ex.get(str(f)) == b"pem"


def test_timeout_kills_the_command(ex, audit):
    needle = f"31.{uuid.uuid4().int % 10**8}"  # a sleep nobody else runs
    t0 = time.monotonic()
    with pytest.raises(CommandError) as ei:
        ex.run(["sleep", needle], timeout=1.0)
    dt = time.monotonic() - t0
    assert ei.value.rc is None and "timed out" in str(ei.value)
    assert 1.0 <= dt < 2.5, dt
    deadline = time.monotonic() + 2
    while _procs_with_cmdline(f"sleep\0{needle}\0".encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _procs_with_cmdline(f"sleep\0{needle}\0".encode()) == []
    rec = records(audit)[-1]
    assert (rec["outcome"], rec["rc"], rec["argv"]) == ("timeout", None, ["sleep", needle])
    assert ex.run(["echo", "still fine"]).stdout == "still fine\n"  # the connection survived


def test_unreachable_host_fails_within_connect_timeout(sshd, netns, tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl")
    dead = Host("master1", netns.drop_ip, frozenset({Role.ETCD}), port=22)
    ct = 1.5
    with SSHExecutor(dead, sshd.settings(), audit=audit, connect_timeout=ct) as e:
        t0 = time.monotonic()
        with pytest.raises(TransportError) as ei:
            e.run(["true"])
        dt = time.monotonic() - t0
    assert ct - 0.1 <= dt <= ct + 1.0, dt  # it really waited (dropped SYNs), then gave up on time
    assert str(ei.value) == f"master1 unreachable: no answer in 1.5 s from {netns.drop_ip}:22"
    rec = records(audit)[0]
    assert (rec["outcome"], rec["rc"]) == ("unreachable", None)


def test_power_loss_on_a_cached_connection(ns_sshd, netns, tmp_path):
    """After power loss paramiko's transport still says is_active(): the executor must give up on
    its own deadlines, not hang (NOTES)."""
    audit = AuditLog(tmp_path / "a.jsonl")
    with SSHExecutor(ns_sshd.host("node1"), ns_sshd.settings(connect_timeout=1.0), audit=audit) as e:
        assert e.run(["hostname"]).rc == 0
        netns.unplug()
        try:
            t0 = time.monotonic()
            with pytest.raises(TransportError):
                e.run(["true"])
            dt = time.monotonic() - t0
            # a dead channel open (1 s), then one reconnect (1 s), then give up; a hang would be
            # TCP's retransmissions (minutes): the slack is for a loaded machine (4 quick-loop
            # workers on 2 cores took over 3 s once)
            assert dt < 2 * 1.0 + 3.0, dt
        finally:
            netns.plug()
        assert e.run(["true"]).rc == 0  # back after power-on: reconnects lazily
    assert [r["outcome"] for r in records(audit)] == ["ok", "unreachable", "ok"]


def test_power_loss_while_a_command_runs(ns_sshd, netns, tmp_path):
    """The host dies mid-command: after the command timeout the executor finds no live host and
    says unreachable (outcome unknown), not 'the command timed out'."""
    with SSHExecutor(ns_sshd.host("node1"), ns_sshd.settings(connect_timeout=1.0)) as e:
        e.run(["true"])
        timer = threading.Timer(0.3, netns.unplug)
        timer.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(TransportError) as ei:
                e.run(["sleep", "5"], timeout=1.5)
            dt = time.monotonic() - t0
        finally:
            timer.join()
            netns.plug()
    assert "no answer from the host" in str(ei.value)
    assert dt < 1.5 + 1.0 + 3.0, dt  # the command's timeout, one reconnect, a loaded machine's slack


def test_dead_cached_connection_is_replaced(ex):
    """A reused connection that died is replaced before the command is sent."""
    ex.run(["true"])
    ex._client.get_transport().sock.close()  # simulate a connection the other side dropped
    assert ex.run(["echo", "again"]).stdout == "again\n"


def test_concurrent_runs_share_one_connection(ex, audit):
    results: list[str] = []

    def work(i: int) -> None:
        results.append(ex.run(["echo", str(i)]).stdout.strip())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == [str(i) for i in range(8)]
    assert verify(audit.path).ok and verify(audit.path).records == 8


def test_sudo_prefix(sshd, tmp_path):
    """sudo -n -- argv (root needs no password, so this runs where sudo is installed)."""
    import shutil

    if not shutil.which("sudo"):
        pytest.skip("sudo not installed")
    with SSHExecutor(sshd.host(sudo=True), sshd.settings()) as e:
        assert e._wrap(["id", "-u"]).startswith("sudo -n -- sh -c")
        assert e.run(["id", "-u"]).stdout.strip() == "0"
        target = tmp_path / "via-sudo"
        e.put(b"abc", str(target), mode=0o600)
        assert target.read_bytes() == b"abc" and stat.S_IMODE(target.stat().st_mode) == 0o600
        assert e.get(str(target)) == b"abc"


def test_a_large_file_under_sudo_is_streamed_not_held_in_memory(sshd, tmp_path):
    """get_to through `sudo cat` writes what arrives: Python's peak allocation stays far below the
    file's size (it was the whole file, read into memory, before)."""
    import shutil
    import tracemalloc

    if not shutil.which("sudo"):
        pytest.skip("sudo not installed")
    big = tmp_path / "db"
    big.write_bytes(os.urandom(1 << 20) * 32)  # 32 MiB
    with SSHExecutor(sshd.host(sudo=True), sshd.settings()) as e:
        e.run(["true"])  # connected before measuring
        tracemalloc.start()
        try:
            size = e.get_to(str(big), tmp_path / "copy")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size == big.stat().st_size and (tmp_path / "copy").read_bytes() == big.read_bytes()
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 32 MiB file"
        with pytest.raises(CommandError):
            e.get_to(str(tmp_path / "missing"), tmp_path / "nothing")
        assert not (tmp_path / "nothing").exists()


def test_audit_never_holds_the_private_key(ex, audit, client_key):
    body = "".join(client_key.read_text().splitlines()[1:-1])  # the base64 between the PEM lines
    pem = client_key.read_text()
    ex.run(["echo", pem], check=False)  # a command that carries the key in argv
    ex.run(["true"], reason=f"key is {pem}")
    raw = audit.path.read_bytes()
    for line in raw.splitlines():
        assert body[:40].encode() not in line
        for ln in pem.splitlines()[1:-1]:
            assert ln.encode() not in line
    assert verify(audit.path).ok


def test_the_connection_sends_small_messages_at_once(ex):
    """TCP_NODELAY on the SSH socket: a command's few small messages (channel open, exec, EOF)
    would otherwise each wait out the peer's delayed ACK (~40 ms per command, measured on the lab)."""
    ex.run(["true"])
    sock = ex._client.get_transport().sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_measure_latency(sshd, capsys):
    """Not an assertion of speed beyond sanity: prints connect and exec latency for the report."""
    e = SSHExecutor(sshd.host(), sshd.settings())
    t0 = time.monotonic()
    e.run(["true"])
    first = time.monotonic() - t0
    times = []
    for _ in range(10):
        t0 = time.monotonic()
        e.run(["true"])
        times.append(time.monotonic() - t0)
    e.close()
    times.sort()
    with capsys.disabled():
        print(
            f"\n[ssh latency] connect+first exec {first * 1000:.0f} ms; reused exec median "
            f"{times[5] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
        )
    assert times[5] < 1.0


def test_background_child_holding_stdout_does_not_hang(ex):
    """`cmd &` with stdout still open: the command exits, its output never ends (NOTES). The executor
    returns shortly after the exit status instead of waiting for the command timeout."""
    t0 = time.monotonic()
    r = ex.run(["sh", "-c", "sleep 4.25 & echo started"], timeout=10)
    assert r.stdout == "started\n" and r.rc == 0
    assert time.monotonic() - t0 < 3.5


def test_key_and_known_hosts_held_in_memory(sshd, client_key: Path) -> None:
    """A Prefect block's credentials: handed to paramiko as bytes, no file involved."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from etcd_dr.inventory import InMemoryFile

    s = sshd.settings(
        key_file=InMemoryFile(client_key.read_bytes(), "ssh.key_file (block)"),
        known_hosts=InMemoryFile(sshd.known_hosts_line(), "ssh.known_hosts (block)"),
    )
    with SSHExecutor(sshd.host(), s) as e:
        assert e.run(["echo", "in-memory"]).stdout.strip() == "in-memory"
    other = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    wrong = sshd.settings(
        key_file=InMemoryFile(client_key.read_bytes(), "ssh.key_file (block)"),
        known_hosts=InMemoryFile(sshd.known_hosts_line(other.decode()), "kh"),
    )
    with pytest.raises(HostKeyError), SSHExecutor(sshd.host(), wrong) as e:
        e.run(["true"])
    junk = b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
    bad = sshd.settings(key_file=InMemoryFile(junk, "ssh.key_file (b)"))
    with pytest.raises(InputError, match=r"^ssh\.key_file: <ssh\.key_file \(b\) held in memory> is not"):
        SSHExecutor(sshd.host(), bad).run(["true"])
    garbled = sshd.settings(known_hosts=InMemoryFile(b"127.0.0.1 ssh-ed25519 AAAA\n", "kh"))
    with pytest.raises(InputError, match=r"^ssh\.known_hosts: line 1 is not a known_hosts entry"):
        SSHExecutor(sshd.host(), garbled).run(["true"])


def test_ssh_agent(sshd, client_key: Path, tmp_path: Path, monkeypatch) -> None:
    """ssh.agent: true with no key_file logs in with the agent's key (the production default that
    keeps the key off the Prefect server); without an agent, a clear input error."""
    import subprocess

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with SSHExecutor(sshd.host(), sshd.settings(key_file=None, agent=True)) as e:
            assert e.run(["echo", "agent"]).stdout.strip() == "agent"
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with pytest.raises(InputError, match=r"^ssh\.agent: no ssh-agent"):
            SSHExecutor(sshd.host(), sshd.settings(key_file=None, agent=True)).run(["true"])
    finally:
        agent.terminate()  # by PID: only the agent this test started
        agent.wait(5)


def test_a_tunnel_reaches_a_port_as_the_host_dials_it_and_is_audited(ex, audit):
    """`ssh -L` in-process: bytes both ways, several connections at once, a closed port ends the
    client's connection (no hang), and once the block ends nothing listens any more."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.sendall(b"echo:" + c.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    with ex.tunnel("127.0.0.1", port) as (addr, lport):
        assert addr == "127.0.0.1" and lport != port
        for n in range(3):
            with socket.create_connection((addr, lport), timeout=5) as c:
                c.sendall(f"hi {n}".encode())
                assert c.recv(100) == f"echo:hi {n}".encode()
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()
    with pytest.raises(OSError):
        socket.create_connection((addr, lport), timeout=1).close()
    closed = socket.create_server(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    # nothing listens there: sshd refuses the channel and the client's connection just ends
    with ex.tunnel("127.0.0.1", dead) as (a, p), socket.create_connection((a, p), timeout=5) as c:
        c.settimeout(5)
        assert c.recv(100) == b""
    tunnels = [r["reason"] for r in records(audit) if r["action"] == "tunnel"]
    assert tunnels == [f"to 127.0.0.1:{port}", f"to 127.0.0.1:{dead}"]


def test_run_streaming_hands_output_over_as_it_comes(ex, audit):
    got: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    r = ex.run_streaming(
        ["sh", "-c", "echo first; sleep 1; echo second; echo oops >&2; exit 3"],
        lambda b: got.append((time.monotonic() - t0, b)),
        reason="test: stream",
    )
    assert (r.rc, r.stdout, r.stderr) == (3, "", "oops\n")
    assert b"".join(b for _, b in got) == b"first\nsecond\n"
    assert got[0][0] < 0.9 <= time.monotonic() - t0  # the first line arrived before the command ended
    rec = records(audit)[-1]
    assert (rec["reason"], rec["rc"]) == ("test: stream", 3)


def test_run_streaming_kills_the_command_at_its_timeout(ex, audit):
    needle = f"32.{uuid.uuid4().int % 10**8}"
    got: list[bytes] = []
    t0 = time.monotonic()
    r = ex.run_streaming(["sh", "-c", f"echo started; exec sleep {needle}"], got.append, timeout=1.0)
    assert r.rc == -1 and 1.0 <= time.monotonic() - t0 < 2.5
    assert b"".join(got) == b"started\n"
    deadline = time.monotonic() + 2
    while _procs_with_cmdline(f"sleep\0{needle}\0".encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _procs_with_cmdline(f"sleep\0{needle}\0".encode()) == []
    assert records(audit)[-1]["outcome"] == "timeout"
