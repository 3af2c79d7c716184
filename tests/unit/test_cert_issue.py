"""Certificate issue core: SANs, EKU, validity against the TARGET host's clock, CA checks, keep a
valid pair. The host is an in-memory stand-in executor (files + a clock); the lab tests run the same
code over real SSH."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509

from etcd_dr.certissue import CertOutcome, CertRefused, issue_member_cert, member_sans
from etcd_dr.certs import (
    CertKeyPair,
    cert_sans,
    cert_usages,
    check_ca,
    issue_cert,
    member_pair_problem,
    new_ca,
    signed_by,
    validity_problem,
)
from etcd_dr.errors import InputError
from etcd_dr.executor import CommandResult
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings

NODE1 = Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER}))
INV = Inventory(
    cluster="t",
    hosts=(Host("master1", "10.9.0.11", frozenset({Role.ETCD})), NODE1),
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
)
CERT = "/etc/kubernetes/ssl/kube-etcd-10-9-0-21.pem"
KEY = "/etc/kubernetes/ssl/kube-etcd-10-9-0-21-key.pem"
CA_PATH = "/etc/kubernetes/ssl/kube-ca.pem"


class FakeHost:
    """Stand-in for a host reached over SSH: a dict of files with modes and a settable clock."""

    def __init__(self, name: str = "node1", skew_s: float = 0.0) -> None:
        self.host = name
        self.files: dict[str, tuple[bytes, int]] = {}
        self.skew_s = skew_s
        self.writes = 0

    def run(self, argv, *, timeout=None, check=True, stdin=None, reason="", idempotent=False):
        argv = tuple(argv)
        out, rc = "", 0
        if argv[:2] == ("sh", "-c") and argv[3] == "look":  # HostFS.look: clock, tests, files
            clock, n, rest = argv[4], int(argv[5]), argv[6:]
            lines = [f"{dt.datetime.now(dt.UTC).timestamp() + self.skew_s:.6f}" if clock == "1" else "-"]
            lines += ["1" if rest[2 * i + 1] in self.files else "0" for i in range(n)]
            for f in rest[2 * n :]:
                lines.append(f"1 {base64.b64encode(self.files[f][0]).decode()}" if f in self.files else "0")
            out = "\n".join(lines) + "\n"
        elif argv[:2] == ("sh", "-c") and argv[3] == "rename":  # HostFS.rename (move_aside)
            assert argv[5] not in self.files
            self.files[argv[5]] = self.files.pop(argv[4])
            self.writes += 1
        elif argv[:3] == ("stat", "-c", "%a"):
            out = f"{self.files[argv[-1]][1]:o}\n"
        elif argv[0] != "mkdir":
            raise AssertionError(f"unexpected command {argv}")
        return CommandResult(self.host, argv, rc, out, "", 0.001)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        self.files[remote_path] = (data, mode)
        self.writes += 1

    def get(self, remote_path: str) -> bytes:
        return self.files[remote_path][0]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> CertKeyPair:
    return new_ca("kube-ca")


def _cert(host: FakeHost) -> x509.Certificate:
    return x509.load_pem_x509_certificate(host.get(CERT))


def test_issue_on_a_fresh_host_sans_eku_chain_key_mode(ca: CertKeyPair) -> None:
    h = FakeHost()
    res = issue_member_cert(INV, "node1", ca, executor=h, ips=["10.1.0.5"], dns=["node1.dc2.example"])
    assert res.outcome is CertOutcome.ISSUED and res.ca_installed
    c = _cert(h)
    ips, dns = cert_sans(c)
    assert ips == {"10.9.0.21", "127.0.0.1", "10.1.0.5"}
    assert dns == {"node1", "localhost", "node1.dc2.example"}
    assert cert_usages(c) == {"serverAuth", "clientAuth"}
    assert signed_by(c, ca.certificate())
    assert c.subject.rfc4514_string() == "CN=kube-etcd-10-9-0-21"
    assert h.files[KEY][1] == 0o600 and h.files[CERT][1] == 0o644
    assert h.files[CA_PATH] == (ca.cert_pem, 0o644)
    assert CertKeyPair(h.get(CERT), h.get(KEY)).certificate() == c
    assert (
        member_pair_problem(
            CertKeyPair(h.get(CERT), h.get(KEY)),
            ca.certificate(),
            ips=list(ips),
            dns=list(dns),
            now=res.host_clock.now,
        )
        is None
    )
    # ~10 years, starting a little before the host's clock
    assert dt.timedelta(days=3649) < c.not_valid_after_utc - c.not_valid_before_utc <= dt.timedelta(days=3650)
    assert c.not_valid_before_utc <= res.host_clock.now
    assert res.reason.startswith(
        "issued kube-etcd-10-9-0-21.pem for node1: SANs 10.9.0.21, 127.0.0.1, 10.1.0.5"
    )


def test_second_run_keeps_the_valid_pair_and_says_so(ca: CertKeyPair) -> None:
    h = FakeHost()
    first = issue_member_cert(INV, "node1", ca, executor=h)
    writes = h.writes
    again = issue_member_cert(INV, "node1", ca, executor=h)
    assert again.outcome is CertOutcome.KEPT and again.serial == first.serial
    assert h.writes == writes  # nothing written
    assert again.reason.startswith("kept kube-etcd-10-9-0-21.pem on node1: a valid certificate for its SANs")


def test_a_new_san_reissues_and_moves_the_old_pair_aside(ca: CertKeyPair) -> None:
    h = FakeHost()
    first = issue_member_cert(INV, "node1", ca, executor=h)
    res = issue_member_cert(INV, "node1", ca, executor=h, ips=["10.1.0.5"])
    assert res.outcome is CertOutcome.ISSUED and res.serial != first.serial
    assert "(the old one: its SANs lack 10.1.0.5)" in res.reason
    assert len(res.moved_aside) == 2 and all(".bak-" in p for p in res.moved_aside)
    assert all(p in h.files for p in res.moved_aside)


def test_a_pair_signed_by_another_ca_is_replaced(ca: CertKeyPair) -> None:
    h = FakeHost()
    other = issue_cert(new_ca("other"), "x", ips=["10.9.0.21", "127.0.0.1"], dns=["node1", "localhost"])
    h.files[CERT], h.files[KEY] = (other.cert_pem, 0o644), (other.key_pem, 0o600)
    res = issue_member_cert(INV, "node1", ca, executor=h)
    assert res.outcome is CertOutcome.ISSUED and "it is not signed by CN=kube-ca" in res.reason


def test_mismatched_ca_key_is_refused_before_anything_is_written(ca: CertKeyPair) -> None:
    h = FakeHost()
    wrong = CertKeyPair(ca.cert_pem, new_ca().key_pem)
    with pytest.raises(InputError) as e:
        issue_member_cert(INV, "node1", wrong, executor=h)
    assert "the CA key does not match the CA certificate" in str(e.value)
    assert h.files == {}
    with pytest.raises(InputError, match="does not match"):
        check_ca(wrong)


def test_a_leaf_is_not_a_ca(ca: CertKeyPair) -> None:
    with pytest.raises(InputError, match="is not a CA certificate"):
        check_ca(issue_cert(ca, "leaf"))


def test_host_clock_behind_refuses_with_the_x509_message_and_the_fix(ca: CertKeyPair) -> None:
    h = FakeHost(skew_s=-3600)  # node1's clock is an hour behind: the source incident
    with pytest.raises(CertRefused) as e:
        issue_member_cert(INV, "node1", ca, executor=h)
    msg = str(e.value)
    assert "x509: certificate has expired or is not yet valid: current time " in msg
    assert " is before " in msg
    assert "fix: sync node1's clock (it is 3600.0 s behind this machine" in msg
    assert h.files == {}  # refused before writing


def test_shifted_validity_window_is_refused_on_the_hosts_clock(ca: CertKeyPair) -> None:
    h = FakeHost()
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    with pytest.raises(CertRefused) as e:
        issue_member_cert(INV, "node1", ca, executor=h, not_before=future)
    assert f"is before {future:%Y-%m-%dT%H:%M:%SZ}" in str(e.value)
    assert "--not-before" in str(e.value) and h.files == {}


def test_expired_on_the_hosts_clock_is_refused(ca: CertKeyPair) -> None:
    h = FakeHost(skew_s=3 * 86400)  # host clock 3 days ahead; certificate valid 1 day
    with pytest.raises(CertRefused, match="is after"):
        issue_member_cert(INV, "node1", ca, executor=h, days=1)
    assert h.files == {}


def test_another_ca_on_the_host_is_refused(ca: CertKeyPair) -> None:
    h = FakeHost()
    h.files[CA_PATH] = (new_ca().cert_pem, 0o644)
    with pytest.raises(CertRefused, match="is another CA than the one given"):
        issue_member_cert(INV, "node1", ca, executor=h)
    assert set(h.files) == {CA_PATH}


def test_validity_problem_is_pure_on_a_given_clock(ca: CertKeyPair) -> None:
    nb = dt.datetime(2022, 6, 1, 12, 53, 50, tzinfo=dt.UTC)
    c = issue_cert(ca, "x", not_before=nb, days=1).certificate()
    assert validity_problem(c, dt.datetime(2022, 6, 1, 4, 49, 1, tzinfo=dt.UTC)) == (
        "x509: certificate has expired or is not yet valid: current time 2022-06-01T04:49:01Z is before "
        "2022-06-01T12:53:50Z"
    )  # the source incident's message, word for word
    assert validity_problem(c, nb + dt.timedelta(hours=1)) is None
    assert validity_problem(c, nb + dt.timedelta(days=2)).endswith("is after 2022-06-02T12:53:50Z")


def test_member_sans_and_bad_ip() -> None:
    assert member_sans(NODE1, ["10.9.0.21", "fd00::1"], ["Node1.Example."]) == (
        ["10.9.0.21", "127.0.0.1", str(ipaddress.ip_address("fd00::1"))],
        ["node1", "localhost", "node1.example"],
    )
    with pytest.raises(InputError, match="--ip 'node7' is not an IP address"):
        member_sans(NODE1, ["node7"])


def test_no_key_material_in_results_or_errors(ca: CertKeyPair) -> None:
    h = FakeHost()
    res = issue_member_cert(INV, "node1", ca, executor=h)
    key = h.get(KEY).decode()
    body = key.splitlines()[1]
    shown = json.dumps(res.to_json()) + repr(res) + repr(CertKeyPair(h.get(CERT), h.get(KEY)))
    assert body not in shown and ca.key_pem.decode().splitlines()[1] not in shown
    with pytest.raises(CertRefused) as e:
        issue_member_cert(INV, "node1", ca, executor=FakeHost(skew_s=-7200))
    assert "PRIVATE KEY" not in str(e.value)
