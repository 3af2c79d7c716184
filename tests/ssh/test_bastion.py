"""SSH through a bastion (jump host) against a real sshd on loopback: the sshd is both the bastion
(127.0.0.1) and the target, which is named `localhost` so that a direct connection to it can be
refused here and only the bastion's `direct-tcpip` channel can reach it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from etcd_dr.errors import HostKeyError, TransportError
from etcd_dr.executor import Bastion, SSHExecutor
from etcd_dr.inventory import BastionSettings, Host, Role

pytestmark = pytest.mark.ssh


@pytest.fixture
def no_direct(monkeypatch) -> list[tuple]:
    """socket.create_connection refuses `localhost`: the target is reachable only through the bastion."""
    real = socket.create_connection
    tried: list[tuple] = []

    def guarded(address, *a, **kw):
        tried.append(address)
        if address[0] == "localhost":
            raise ConnectionRefusedError(111, "direct connection refused by the test")
        return real(address, *a, **kw)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return tried


def _known_hosts(sshd, tmp_path: Path, *, bastion: bool = True, target: bool = True) -> Path:
    kh = tmp_path / "known_hosts"
    lines = [f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n"] if bastion else []
    lines += [f"[localhost]:{sshd.port} {sshd.host_pub}\n"] if target else []
    kh.write_text("".join(lines))
    return kh


def _target(sshd, name: str = "m1", port: int | None = None) -> Host:
    return Host(name, "localhost", frozenset({Role.ETCD}), port=port or sshd.port)


def test_commands_and_tunnels_go_through_one_shared_bastion_connection(sshd, tmp_path, no_direct):
    ssh = sshd.settings(_known_hosts(sshd, tmp_path))
    b = Bastion(BastionSettings(address="127.0.0.1", port=sshd.port), ssh)
    try:
        with SSHExecutor(_target(sshd), ssh) as direct, pytest.raises(TransportError):
            direct.run(["true"])  # the guard works: no bastion, no way in
        e1, e2 = (
            SSHExecutor(_target(sshd, "m1"), ssh, bastion=b),
            SSHExecutor(_target(sshd, "m2"), ssh, bastion=b),
        )
        assert e1.run(["echo", "one"]).stdout == "one\n"
        assert e2.run(["echo", "two"]).stdout == "two\n"
        assert "via bastion 127.0.0.1:" in repr(e1)
        # one connection to the bastion carries both hosts' connections
        assert [a for a in no_direct if a[0] == "127.0.0.1"] == [("127.0.0.1", sshd.port)]
        # a tunnel of a host reached through the bastion, and the bastion's own forward
        with (
            e1.tunnel("127.0.0.1", sshd.port) as (addr, port),
            socket.create_connection((addr, port), 2) as s,
        ):
            assert s.recv(64).startswith(b"SSH-2.0-")
        addr, port = b.forward("127.0.0.1", sshd.port)
        assert b.forward("127.0.0.1", sshd.port) == (addr, port)  # made once, kept
        with socket.create_connection((addr, port), 2) as s:
            assert s.recv(64).startswith(b"SSH-2.0-")
        e1.close()
        e2.close()
    finally:
        b.close()


def test_the_bastions_unknown_host_key_is_refused_naming_the_bastion(sshd, tmp_path, no_direct):
    ssh = sshd.settings(_known_hosts(sshd, tmp_path, bastion=False))
    b = Bastion(BastionSettings(address="127.0.0.1", port=sshd.port), ssh)
    marker = tmp_path / "ran"
    with SSHExecutor(_target(sshd), ssh, bastion=b) as e, pytest.raises(HostKeyError) as ei:
        e.run(["touch", str(marker)])
    b.close()
    msg = str(ei.value)
    assert msg.startswith(f"m1: through the bastion 127.0.0.1:{sshd.port}: host key refused")
    assert "is not in" in msg and "SHA256:" in msg
    assert not marker.exists()


def test_a_target_with_an_unknown_key_behind_the_bastion_is_refused_naming_the_target(sshd, tmp_path):
    ssh = sshd.settings(_known_hosts(sshd, tmp_path, target=False))
    b = Bastion(BastionSettings(address="127.0.0.1", port=sshd.port), ssh)
    with SSHExecutor(_target(sshd), ssh, bastion=b) as e, pytest.raises(HostKeyError) as ei:
        e.run(["true"])
    b.close()
    assert str(ei.value).startswith("m1: host key refused: [localhost]:") and "bastion" not in str(ei.value)


def test_an_unreachable_bastion_is_named_and_a_refused_target_too(sshd, tmp_path, no_direct):
    ssh = sshd.settings(_known_hosts(sshd, tmp_path))
    dead = Bastion(BastionSettings(address="127.0.0.1", port=1), ssh)  # nothing listens on port 1
    with SSHExecutor(_target(sshd), ssh, bastion=dead) as e, pytest.raises(TransportError) as ei:
        e.run(["true"])
    assert str(ei.value) == (
        "m1 unreachable: through the bastion 127.0.0.1:1: 127.0.0.1:1 refused the connection "
        "(is sshd running?)"
    )
    b = Bastion(BastionSettings(address="127.0.0.1", port=sshd.port), ssh)
    try:
        with SSHExecutor(_target(sshd, port=1), ssh, bastion=b) as e, pytest.raises(TransportError) as ei:
            e.run(["true"])
        msg = str(ei.value)
        assert msg.startswith(
            f"m1 unreachable: the bastion 127.0.0.1:{sshd.port} could not connect to localhost:1"
        )
        addr, port = b.forward("localhost", 1)
        with socket.create_connection((addr, port), 2) as s:
            assert s.recv(64) == b""  # the forward closes a connection it cannot carry ...
        assert "could not connect to localhost:1" in (b.why_not("localhost", 1) or "")  # ... and says why
    finally:
        b.close()
