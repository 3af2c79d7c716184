"""The etcd client's parts that need no etcd: error mapping, endpoint parsing, TLS checks, versions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etcd_dr import etcdbin
from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.client import EtcdClient, _target, _transport_reason, snapshot_response_fields

# The status details etcd sends (etcdserver/api/v3rpc/rpctypes/error.go, 3.4 and 3.5).
ETCD_DETAILS = [
    ("etcdserver: unhealthy cluster", E.UnhealthyCluster),
    ("etcdserver: can only promote a learner member which is in sync with leader", E.LearnerNotInSync),
    ("etcdserver: can only promote a learner member", E.MemberNotLearner),
    ("etcdserver: too many learner members in cluster", E.TooManyLearners),
    ("etcdserver: rpc not supported for learner", E.NotSupportedOnLearner),
    ("etcdserver: member not found", E.MemberNotFound),
    ("etcdserver: request timed out", E.EtcdTimeout),
    ("etcdserver: request timed out, possibly due to previous leader failure", E.EtcdTimeout),
    ("etcdserver: no leader", E.NoLeader),
    ("etcdserver: leader changed", E.NoLeader),
    ("etcdserver: Peer URLs already exists", E.EtcdRequestError),
]


@pytest.mark.parametrize(("details", "cls"), ETCD_DETAILS)
def test_error_mapping(details: str, cls: type) -> None:
    assert E.error_class_for(details) is cls
    assert issubclass(cls, EtcdDrError)


def test_transport_errors_are_not_etcd_errors() -> None:
    assert E.error_class_for("failed to connect to all addresses") is None
    msg = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:2379: "
        "Failed to connect to remote host: Connection refused"
    )
    assert _transport_reason("UNAVAILABLE", msg) == "Failed to connect to remote host: Connection refused"


def test_unavailable_names_every_endpoint() -> None:
    e = E.EtcdUnavailable("member list", [("https://a:2379", "refused"), ("https://b:2379", "timeout")])
    assert "https://a:2379: refused" in str(e) and "https://b:2379: timeout" in str(e)


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("https://10.0.0.1:2379", "10.0.0.1:2379"),
        ("10.0.0.1:2379", "10.0.0.1:2379"),
        ("https://[::1]:2379", "[::1]:2379"),
    ],
)
def test_target(endpoint: str, target: str) -> None:
    assert _target(endpoint) == target


@pytest.mark.parametrize("endpoint", ["http://10.0.0.1:2379", "https://10.0.0.1", "https://:2379"])
def test_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(InputError):
        _target(endpoint)


@pytest.fixture(scope="module")
def tls():
    ca = new_ca()
    return ca, issue_cert(ca, "client", server=False), issue_cert(ca, "other", server=False)


def test_client_is_lazy_and_keeps_key_out_of_repr(tls) -> None:
    ca, client, _ = tls
    c = EtcdClient(["https://127.0.0.1:1"], ca_cert=ca.cert_pem, cert=client.cert_pem, key=client.key_pem)
    assert repr(c) == "EtcdClient(endpoints=['https://127.0.0.1:1'])"
    assert "PRIVATE" not in repr(c.__dict__.get("endpoints"))
    c.close()


def test_client_tls_checks(tls, tmp_path: Path) -> None:
    ca, client, other = tls
    with pytest.raises(InputError, match="does not match"):
        EtcdClient(["https://h:1"], ca_cert=ca.cert_pem, cert=client.cert_pem, key=other.key_pem)
    secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----\n"
    with pytest.raises(InputError) as ei:
        EtcdClient(["https://h:1"], ca_cert=ca.cert_pem, cert=client.cert_pem, key=secret)
    assert "TOPSECRET" not in str(ei.value)
    with pytest.raises(InputError, match="cannot read"):
        EtcdClient(
            ["https://h:1"], ca_cert=tmp_path / "missing.pem", cert=client.cert_pem, key=client.key_pem
        )


def _encrypted(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    key = ser.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"pw"))


@pytest.mark.parametrize(
    ("which", "bad", "message"),
    [
        ("ca_cert", lambda t: b"not a cert", "ca_cert: not a PEM certificate"),
        ("ca_cert", lambda t: "\u00e9t\u00e9".encode(), "ca_cert: not a PEM certificate"),
        ("cert", lambda t: t[1].key_pem, "cert: not a PEM certificate"),
        ("key", lambda t: t[1].cert_pem, "key: not an unencrypted PEM private key"),
        ("key", lambda t: _encrypted(t[1].key_pem), "key: not an unencrypted PEM private key"),  # no prompt
        ("key", lambda t: t[2].key_pem, "key does not match the client certificate"),
    ],
)
def test_client_tls_material_refused_naming_the_field(tls, which: str, bad, message: str) -> None:
    ca, client, _ = tls
    given = {"ca_cert": ca.cert_pem, "cert": client.cert_pem, "key": client.key_pem, which: bad(tls)}
    with pytest.raises(InputError, match=message) as ei:
        EtcdClient(["https://h:1"], **given)
    assert "PRIVATE" not in str(ei.value)


def test_client_tls_material_rsa_and_files(tmp_path: Path) -> None:
    ca = new_ca(rsa_bits=2048)  # RKE's external-etcd client key is RSA; the lab's is P-256
    pair = issue_cert(ca, "client", server=False, rsa_bits=2048)
    for name, data in (("ca.pem", ca.cert_pem), ("c.pem", pair.cert_pem), ("k.pem", pair.key_pem)):
        (tmp_path / name).write_bytes(data)
    EtcdClient(
        ["https://h:1"], ca_cert=tmp_path / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "k.pem"
    ).close()


@pytest.mark.parametrize("version", ["3", "3.5.1", "3.5.0", "v3.5", "3.6", "4.0", ""])
def test_bad_versions(version: str) -> None:
    with pytest.raises(InputError):
        etcdbin.ensure_binaries(version)


def test_debian_mirror_from_deb822(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
    )
    monkeypatch.setattr(etcdbin, "APT_SOURCES_DIR", d)
    monkeypatch.setattr(etcdbin, "APT_SOURCES_LIST", tmp_path / "none.list")
    assert etcdbin.debian_mirror() == "http://mirror.example/debian"


def test_debian_mirror_from_one_line_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lst = tmp_path / "sources.list"
    lst.write_text("deb [arch=amd64] http://mirror.example/deb bookworm main\n")
    monkeypatch.setattr(etcdbin, "APT_SOURCES_DIR", tmp_path / "empty")
    monkeypatch.setattr(etcdbin, "APT_SOURCES_LIST", lst)
    assert etcdbin.debian_mirror() == "http://mirror.example/deb"
    lst.write_text("")
    with pytest.raises(etcdbin.EtcdBinariesError):
        etcdbin.debian_mirror()


@pytest.mark.parametrize(
    "msg",
    [
        {"blob": os.urandom(32 * 1024), "remaining_bytes": 5 << 30},
        {"header": {"cluster_id": 2**64 - 1, "member_id": 7, "revision": 300, "raft_term": 2}, "blob": b"x"},
        {"remaining_bytes": 0, "blob": b"", "version": "3.6.0"},
        {"blob": os.urandom(200_000), "version": "3.6.1"},  # a length varint of 3 bytes
        {},
    ],
)
def test_snapshot_response_fields_read_what_protobuf_reads(msg: dict) -> None:
    from etcd_dr.etcd.gen import etcddr_rpc_pb2 as pb

    want = pb.SnapshotResponse(**msg)
    head, blob = snapshot_response_fields(want.SerializeToString())
    assert bytes(blob) == want.blob
    assert (head is not None) == want.HasField("header")
    if head is not None:
        assert pb.ResponseHeader.FromString(head) == want.header


@pytest.mark.parametrize(
    "raw",
    [b"\x1a\x05abc", b"\x1a", b"\x10\xff", b"\x0b", b"\x1a" + b"\xff" * 11],
    ids=["blob past the end", "no length", "varint cut", "wire type 3", "varint too long"],
)
def test_a_malformed_snapshot_response_is_an_etcd_error(raw: bytes) -> None:
    with pytest.raises(E.EtcdError, match="malformed SnapshotResponse"):
        snapshot_response_fields(raw)


def test_etcd_version_is_asked_once_per_binary_until_it_is_replaced(tmp_path: Path) -> None:
    """`etcd --version` by the binary's identity: asked once, asked again after a replacement (a new
    inode, as a package upgrade's rename makes), never stale."""
    calls = tmp_path / "calls"
    etcd = tmp_path / "etcd"

    def install(version: str) -> None:
        new = tmp_path / "etcd.new"
        new.write_text(f'#!/bin/sh\necho x >> "{calls}"\necho "etcd Version: {version}"\n')
        new.chmod(0o755)
        new.replace(etcd)

    install("3.4.23")
    assert etcdbin._version_of(etcd) == "3.4.23"
    assert etcdbin._version_of(etcd) == "3.4.23"
    assert calls.read_text().count("x") == 1
    install("3.4.24")
    assert etcdbin._version_of(etcd) == "3.4.24"
    assert calls.read_text().count("x") == 2


def test_a_look_ahead_without_fetch_refuses_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch=False (the snapshot's look ahead during the stream) never starts a download."""

    def no_fetch(*a: object) -> None:
        raise AssertionError("a download was started")

    monkeypatch.setattr(etcdbin, "_fetch", no_fetch)
    with pytest.raises(etcdbin.EtcdBinariesError, match="not fetched yet"):
        etcdbin.ensure_binaries("3.5", tmp_path / "etcd-3.5", fetch=False)
    assert not (tmp_path / "etcd-3.5").exists()
