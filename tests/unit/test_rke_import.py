"""`etcd-dr inventory import-rke` on fixtures in RKE's formats: the inventory it writes loads, names
the right addresses, ports, roles, timings and certificates; bad state files write nothing."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from etcd_dr.certs import CertKeyPair, signed_by
from etcd_dr.cli import main
from etcd_dr.inventory import Role, load_inventory
from etcd_dr.kubernetes.importer import import_rke
from etcd_dr.kubernetes.rkefiles import RkeFileError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rke"


def shape(tmp_path: Path, name: str) -> Path:
    """A copy of a fixture whose SSH key and known_hosts exist, so the inventory loads with its files."""
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    key = tmp_path / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "known_hosts").write_text("")
    yml = d / "cluster.yml"
    yml.write_text(yml.read_text().replace("ssh_key_path: ~/.ssh/id_rsa", f"ssh_key_path: {key}"))
    return yml


def run(yml: Path, **kw: object):
    return import_rke(yml, known_hosts=yml.parent.parent / "known_hosts", **kw)


def test_three_masters(tmp_path: Path) -> None:
    yml = shape(tmp_path, "three-masters")
    res = run(yml)
    inv = load_inventory(res.inventory)  # with its files: key, known_hosts, client TLS
    assert inv.cluster == "prod-eu1"
    assert [h.name for h in inv.voters] == ["master1", "master2", "master3"]
    assert inv.host("master1").roles == {Role.ETCD, Role.CONTROLPLANE}
    assert inv.host("node2").roles == {Role.WORKER}
    assert (inv.etcd.heartbeat_interval, inv.etcd.election_timeout) == (500, 5000)
    assert inv.etcd.image == "rancher/mirrored-coreos-etcd:v3.4.14-rancher1"  # from the state file
    assert inv.rke is not None and inv.rke.cluster_yml.resolve() == yml
    assert inv.rke.state_path().resolve() == yml.with_suffix(".rkestate")
    # a worker outlives the masters: node1, the first worker-only node
    assert inv.rke.deploy_host == "node1" and "worker" in res.deploy_host_why
    # RKE reaches its own etcd with kube-node (cluster/reconcile.go): so does etcd-dr
    assert res.client_cert == "kube-node" and inv.etcd.client.cert.name == "kube-node.pem"
    ca = CertKeyPair(Path(inv.etcd.client.ca_cert).read_bytes(), b"").certificate()
    assert signed_by(CertKeyPair(Path(inv.etcd.client.cert).read_bytes(), b"").certificate(), ca)
    certs = inv.rke.certs_dir
    assert certs is not None
    for name in ("kube-ca-key.pem", "kube-etcd-10-231-0-11-key.pem", "kube-node-key.pem"):
        assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600
    assert (certs / "kube-etcd-10-231-0-13.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert inv.snapshots is not None and (inv.snapshots.keep_last, inv.snapshots.keep_daily) == (4, 1)
    assert "roles: [etcd, controlplane]" in res.inventory.read_text()


def test_internal_addresses_custom_ports_and_timings(tmp_path: Path) -> None:
    res = run(shape(tmp_path, "five-etcd-internal"))
    inv = load_inventory(res.inventory)
    e1 = inv.host("etcd1")
    # etcd listens on the internal address; SSH goes where RKE's SSH went
    assert (e1.address, e1.ssh_host, e1.port, e1.user) == ("172.16.0.11", "203.0.113.11", 2222, "ops")
    assert inv.etcd.cert_path(e1) == "/etc/kubernetes/ssl/kube-etcd-172-16-0-11.pem"
    assert inv.host("cp1").port == 2200 and inv.ssh.port == 2222
    assert len(inv.voters) == 5
    assert (inv.etcd.heartbeat_interval, inv.etcd.election_timeout) == (250, 2500)
    assert inv.rke is not None and inv.rke.deploy_host == "cp1"  # no worker-only node: the first controlplane
    assert inv.snapshots is None  # snapshot not set in cluster.yml: RKE's default false


def test_one_node(tmp_path: Path) -> None:
    res = run(shape(tmp_path, "one-node"))
    inv = load_inventory(res.inventory)
    (h,) = inv.hosts
    assert h.name == "10.10.0.5" and h.roles == {Role.ETCD, Role.CONTROLPLANE, Role.WORKER}
    assert h.user == "rancher" and inv.rke is not None and inv.rke.deploy_host == "10.10.0.5"


def test_a_bastion_becomes_the_inventorys_bastion_unless_ignored(tmp_path: Path) -> None:
    yml = shape(tmp_path, "bastion")
    res = run(yml)
    inv = load_inventory(res.inventory)
    b = inv.bastion
    assert b is not None and (b.address, b.port, b.user) == ("198.51.100.7", 22, "jump")
    assert b.key_file is None and b.known_hosts is None  # RKE: the cluster's ssh_key_path; ssh's known_hosts
    assert inv.ssh.user == "rancher" and len(inv.voters) == 3
    assert any("bastion_host 198.51.100.7:22: every SSH connection" in n for n in res.notes)
    res = run(shape(tmp_path / "again", "bastion"), ignore_bastion=True)
    assert any("bastion_host 198.51.100.7 ignored" in n for n in res.notes)
    assert load_inventory(res.inventory).bastion is None


def test_a_bastion_with_its_own_key_and_port(tmp_path: Path) -> None:
    yml = shape(tmp_path, "bastion")
    key = tmp_path / "jump_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    text = yml.read_text().replace("  port: 22\n", f"  port: 2222\n  ssh_key_path: {key}\n")
    yml.write_text(text)
    b = load_inventory(run(yml).inventory).bastion
    assert b is not None and (b.port, b.key_file) == (2222, key)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (("  user: jump\n", ""), "bastion_host.user: is missing"),
        (
            ("  user: jump\n", "  user: jump\n  ssh_cert_path: /etc/ssh/jump-cert.pub\n"),
            "bastion_host.ssh_cert_path",
        ),
        (("  user: jump\n", "  user: jump\n  ssh_key: abc\n"), "bastion_host.ssh_key: an inline key"),
        (("  user: jump\n", "  user: jump\n  jump: 1\n"), "bastion_host.jump: not a field RKE knows here"),
    ],
)
def test_a_bastion_etcd_dr_cannot_use_is_refused_and_nothing_written(
    tmp_path: Path, edit: tuple[str, str], problem: str
) -> None:
    yml = shape(tmp_path, "bastion")
    yml.write_text(yml.read_text().replace(*edit))
    with pytest.raises(RkeFileError) as e:
        run(yml)
    assert problem in str(e.value)
    assert not (yml.parent / "etcd-dr").exists()  # nothing written


def test_external_etcd_already_in_use(tmp_path: Path) -> None:
    res = run(shape(tmp_path, "external-etcd"))
    inv = load_inventory(res.inventory)
    assert [h.address for h in inv.voters] == ["10.30.0.51", "10.30.0.52"]
    assert inv.host("cp1").roles == {Role.CONTROLPLANE, Role.WORKER}
    # kube-apiserver's client for external etcd, and the external etcd's own CA
    assert res.client_cert == "kube-etcd-client"
    assert inv.etcd.client.ca_cert.name == "kube-etcd-client-ca.pem"
    assert inv.etcd.client.key.name == "kube-etcd-client-key.pem"
    assert any("external etcd endpoint" in n for n in res.notes)


def test_a_state_file_of_another_cluster_is_refused_and_nothing_written(tmp_path: Path) -> None:
    yml = shape(tmp_path, "three-masters")
    other = FIX / "five-etcd-internal/cluster.rkestate"
    with pytest.raises(RkeFileError) as e:
        run(yml, state_file=other)
    text = str(e.value)
    assert (
        "cluster.rkestate: currentState.certificatesBundle.kube-etcd-10-231-0-11: missing (the etcd "
        "certificate of nodes[0], 10.231.0.11)" in text
    )
    assert "pass the cluster.rkestate `rke up` last wrote for this cluster.yml (--state)" in text
    assert not (yml.parent / "etcd-dr").exists()


def test_a_missing_key_or_a_foreign_certificate_is_reported(tmp_path: Path) -> None:
    yml = shape(tmp_path, "three-masters")
    st = json.loads(yml.with_suffix(".rkestate").read_text())
    bundle = st["currentState"]["certificatesBundle"]
    bundle["kube-etcd-10-231-0-12"]["keyPEM"] = ""
    bundle["kube-etcd-10-231-0-13"]["certificatePEM"] = json.loads(
        (FIX / "one-node/cluster.rkestate").read_text()
    )["currentState"]["certificatesBundle"]["kube-etcd-10-10-0-5"]["certificatePEM"]
    yml.with_suffix(".rkestate").write_text(json.dumps(st))
    with pytest.raises(RkeFileError) as e:
        run(yml)
    text = str(e.value)
    assert "kube-etcd-10-231-0-12.keyPEM: is empty (the etcd certificate of nodes[1], 10.231.0.12)" in text
    assert "kube-etcd-10-231-0-13.keyPEM: does not belong to its certificatePEM" in text
    assert "PRIVATE KEY" not in text
    assert not (yml.parent / "etcd-dr").exists()


def test_an_existing_inventory_is_never_overwritten(tmp_path: Path) -> None:
    yml = shape(tmp_path, "three-masters")
    out = tmp_path / "inv.yaml"
    out.write_text("mine\n")
    with pytest.raises(Exception, match="already exists; etcd-dr never overwrites an inventory"):
        run(yml, output=out)
    assert out.read_text() == "mine\n"


def test_cli_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yml = shape(tmp_path, "three-masters")
    kh = str(tmp_path / "known_hosts")
    out = tmp_path / "out" / "inv.yaml"
    argv = [
        "inventory",
        "import-rke",
        str(yml),
        "-o",
        str(out),
        "--known-hosts",
        kh,
        "--deploy-host",
        "master3",
    ]
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ok"] and got["deploy_host"] == "master3" and got["inventory"] == str(out)
    assert str(out.parent / "rke-certs" / "kube-ca-key.pem") in got["written"]
    assert main(["inventory", "check", "-i", str(out)]) == 0
    capsys.readouterr()
    assert (
        main(["inventory", "import-rke", str(yml), "-o", str(tmp_path / "x.yaml"), "--deploy-host", "nope"])
        == 2
    )
    assert "--deploy-host: 'nope' is not a host of this cluster" in capsys.readouterr().err


def test_an_older_rkes_state_file_imports(tmp_path: Path) -> None:
    """RKE v1.0-era state: fields added later absent (enableCriDockerd, winPrefixPath, the etcd
    backupConfig, kube-apiserver-requestheader-ca...), ports written as numbers by hand-edited files."""
    yml = shape(tmp_path, "three-masters")
    st = json.loads(yml.with_suffix(".rkestate").read_text())
    for state in (st["desiredState"], st["currentState"]):
        cfg = state["rkeConfig"]
        for k in ("enableCriDockerd", "winPrefixPath", "monitoring", "dns", "rotateEncryptionKey"):
            cfg.pop(k, None)
        cfg["services"]["etcd"].pop("backupConfig")
        for n in cfg["nodes"]:
            n["port"] = 22
        for entry in state["certificatesBundle"].values():
            for k in ("configEnvName", "configPath", "ouName"):
                entry.pop(k, None)
    yml.with_suffix(".rkestate").write_text(json.dumps(st))
    inv = load_inventory(run(yml).inventory)
    assert [h.name for h in inv.voters] == ["master1", "master2", "master3"]
