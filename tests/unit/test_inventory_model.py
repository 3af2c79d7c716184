"""The inventory model: one declaration per field gives validation, defaults, serialisation and the
JSON Schema; `etcd-dr inventory schema|check`."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from inventory_sample import VALID, sample_data, write_invdir

from etcd_dr.cli import main
from etcd_dr.inventory import (
    BastionSettings,
    CASettings,
    CheckSettings,
    ClientTLS,
    EtcdSettings,
    Host,
    Inventory,
    InventoryError,
    PowerSettings,
    RkeSettings,
    S3Target,
    SnapshotSettings,
    SshSettings,
    inventory_schema,
    inventory_to_dict,
    load_inventory,
    parse_inventory,
    state_paths,
)

S3 = {"endpoint": "http://127.0.0.1:9000", "bucket": "etcd-dr"}
ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    "Inventory": Inventory,
    "Host": Host,
    "SshSettings": SshSettings,
    "EtcdSettings": EtcdSettings,
    "ClientTLS": ClientTLS,
    "SnapshotSettings": SnapshotSettings,
    "S3Target": S3Target,
    "CASettings": CASettings,
    "CheckSettings": CheckSettings,
    "RkeSettings": RkeSettings,
    "PowerSettings": PowerSettings,
    "BastionSettings": BastionSettings,
}


@pytest.fixture
def invdir(tmp_path: Path) -> Path:
    return write_invdir(tmp_path)


def _yaml_keys(cls: type) -> dict:
    return {n: f for n, f in cls.__pydantic_fields__.items() if n not in ("source", "base_dir")}


def test_schema_is_the_model_its_keys_and_defaults() -> None:
    defs = inventory_schema()["$defs"]
    top = inventory_schema()
    for name, cls in SECTIONS.items():
        schema = top if cls is Inventory else defs[name]
        fields = _yaml_keys(cls)
        assert set(schema["properties"]) == set(fields), name
        assert schema["additionalProperties"] is False, name  # a typo'd key is an error, as in the loader
        for key, f in fields.items():
            prop = schema["properties"][key]
            if key in schema.get("required", []):
                assert "default" not in prop, (name, key)
                continue
            default = f.get_default(call_default_factory=True)
            if dataclasses.is_dataclass(default):
                continue  # a section: its own keys carry their defaults
            want = list(default) if isinstance(default, tuple) else default
            assert prop["default"] == want, (name, key)  # the one declared default, nothing else
    assert set(top["required"]) == {"cluster", "hosts", "etcd", "ssh"}
    assert set(defs["SshSettings"]["required"]) == {"known_hosts"}  # key_file: or agent: true
    assert set(defs["EtcdSettings"]["required"]) == {"client"}


def test_a_key_left_out_is_its_declared_default(invdir: Path) -> None:
    d = sample_data()
    for k in ("user", "port", "connect_timeout", "command_timeout", "keepalive", "sudo"):
        del d["ssh"][k]
    d["etcd"] = {"client": d["etcd"]["client"]}
    inv = parse_inventory(d, invdir)
    for section, cls in ((inv.ssh, SshSettings), (inv.etcd, EtcdSettings), (inv.check, CheckSettings)):
        for key, f in _yaml_keys(cls).items():
            if not f.is_required() and key not in ("key_file", "known_hosts", "client"):
                assert getattr(section, key) == f.get_default(call_default_factory=True), key


def test_serialisation_writes_what_differs_from_the_declaration(invdir: Path) -> None:
    inv = parse_inventory(sample_data(), invdir)
    d = inventory_to_dict(inv)
    assert "runtime" not in d["etcd"] and "port" not in d["ssh"]  # defaults: the loader fills them in
    assert d["etcd"]["image"] == "lab/etcd:3.4.23" and d["rehearsal"] is True
    assert d["hosts"][2] == {
        "name": "node1",
        "address": "10.231.0.21",
        "roles": ["etcd-learner", "worker"],
        "user": "admin",
        "port": 2222,
        "sudo": True,
    }
    assert parse_inventory(d, Path("/elsewhere")) == inv


def test_the_schema_validates_the_yaml_as_an_editor_would() -> None:
    schema = inventory_schema()
    jsonschema.validate(yaml.safe_load(VALID), schema)
    bad = yaml.safe_load(VALID.replace("  connect_timeout: 3", "  conect_timeout: 3"))
    with pytest.raises(jsonschema.ValidationError, match="conect_timeout"):
        jsonschema.validate(bad, schema)
    bad = yaml.safe_load(VALID.replace("roles: [etcd-learner, worker]", "roles: [learner]"))
    with pytest.raises(jsonschema.ValidationError, match="learner"):
        jsonschema.validate(bad, schema)


def test_checked_in_schema_is_up_to_date(capsys) -> None:
    assert main(["inventory", "schema"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == inventory_schema()
    on_disk = (ROOT / "docs/inventory.schema.json").read_text()
    assert on_disk == printed, "regenerate it: etcd-dr inventory schema > docs/inventory.schema.json"


@pytest.mark.parametrize(
    ("edit", "where", "phrase"),
    [
        (lambda d: d["hosts"][1].update(power={"driver": "lab", "timeot": 3}), "hosts[1].power.timeot",
         "did you mean 'timeout'?"),
        (lambda d: d["hosts"][0].update(roles=["etcd", "etcd"]), "hosts[0].roles[1]", "listed twice"),
        (lambda d: d.update(snapshots={"dir": "s", "offsite": {"s3": {**S3, "regin": "x"}}}),
         "snapshots.offsite.s3.regin", "did you mean 'region'?"),
        (lambda d: d.update(check={"learner_max_lag": True}), "check.learner_max_lag", "not a whole number"),
        (lambda d: d.update(source="/etc"), "source", "unknown key"),
        (lambda d: d["hosts"].append("m9"), "hosts[3]", "is a string, not a mapping"),
        (lambda d: d.pop("etcd"), "etcd", "is missing; add it with at least its client"),
    ],
)  # fmt: skip
def test_error_paths_name_the_field(invdir: Path, edit, where: str, phrase: str) -> None:
    d = sample_data()
    edit(d)
    with pytest.raises(InventoryError) as ei:
        parse_inventory(d, invdir)
    assert [p for p in ei.value.problems if p.startswith(f"{where}: ") and phrase in p], ei.value.problems


def test_rke_section_defaults_follow_rkes_names_and_the_deploy_host_is_checked(invdir: Path) -> None:
    rke = {"cluster_yml": "rke/cluster.yml", "deploy_host": "master1"}
    inv = parse_inventory(sample_data(rke=rke), invdir)
    assert inv.rke is not None and inv.rke.cluster_yml == invdir / "rke/cluster.yml"
    assert inv.rke.state_path() == invdir / "rke/cluster.rkestate"  # RKE: the extension replaced
    assert inv.rke.kube_config_path() == invdir / "rke/kube_config_cluster.yml"
    assert inv.rke.remote_dir == "/opt/rke" and inv.rke.binary == "rke"
    with pytest.raises(InventoryError) as ei:
        parse_inventory(sample_data(rke={"cluster_yml": "cluster.yml", "deploy_host": "nope"}), invdir)
    assert any(p.startswith("rke.deploy_host: 'nope' is not a host") for p in ei.value.problems), (
        ei.value.problems
    )


def test_the_model_stays_frozen_and_replace_keeps_working(invdir: Path) -> None:
    inv = load_inventory(invdir / "inventory.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.cluster = "x"  # type: ignore[misc]
    again = dataclasses.replace(inv, ssh=dataclasses.replace(inv.ssh, connect_timeout=1.5))
    assert again.ssh.connect_timeout == 1.5 and again.hosts == inv.hosts and again.source == inv.source
    assert hash(inv.hosts[0]) == hash(dataclasses.replace(inv.hosts[0]))


def test_state_paths_come_from_the_declarations() -> None:
    assert set(state_paths()) == {
        ("audit_log",),
        ("state_dir",),
        ("snapshots", "dir"),
        ("snapshots", "offsite", "dir"),
        ("power", "dir"),
    }


def test_inventory_check_cli(invdir: Path, capsys, monkeypatch) -> None:
    def forbidden(*a, **k):
        raise AssertionError("inventory check touched the network")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    f = invdir / "inventory.yaml"
    assert main(["inventory", "check", "-i", str(f)]) == 0
    assert (
        capsys.readouterr().out == f"{f}: ok: cluster lab, 3 hosts, voters master1, master2, learners node1\n"
    )

    bad = invdir / "bad.yaml"
    bad.write_text(
        VALID.replace("address: 10.231.0.21", "address: 10.0.0").replace("port: 22\n", "port: 0\n", 1)
    )
    assert main(["inventory", "check", "-i", str(bad)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"{bad}: 2 problems\n")
    assert "  - hosts[2].address: '10.0.0' is not an IP address or host name" in out
    assert "  - ssh.port: 0 is out of range; use a port number 1-65535" in out

    assert main(["inventory", "check", "-i", str(bad), "--json"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert got["ok"] is False and got["file"] == str(bad)
    assert {p["path"] for p in got["problems"]} == {"hosts[2].address", "ssh.port"}
    assert all(p["message"] for p in got["problems"])

    assert main(["inventory", "check", "-i", str(invdir / "nope.yaml"), "--json"]) == 2
    (p,) = json.loads(capsys.readouterr().out)["problems"]
    assert p["message"].startswith("no such file")


def test_ssh_address_is_where_ssh_connects_and_address_stays_etcds(invdir: Path) -> None:
    """RKE's address vs internal_address: etcd on the internal one, SSH to the other."""
    from etcd_dr.executor import SSHExecutor

    data = sample_data()
    data["hosts"][0]["ssh_address"] = "203.0.113.11"
    inv = parse_inventory(data, invdir)
    m1 = inv.host("master1")
    assert (m1.ssh_host, inv.client_url(m1)) == ("203.0.113.11", "https://10.231.0.11:2379")
    assert inv.host("master2").ssh_host == "10.231.0.12"
    assert "root@203.0.113.11:22" in repr(SSHExecutor(m1, inv.ssh))
    assert parse_inventory(inventory_to_dict(inv), invdir) == inv
    data["hosts"][0]["ssh_address"] = "10.0.0"
    with pytest.raises(InventoryError, match=r"hosts\[0\]\.ssh_address: '10.0.0' is not an IP address"):
        parse_inventory(data, invdir)


def test_a_bastion_takes_ssh_s_user_key_and_known_hosts_unless_given(invdir: Path) -> None:
    from etcd_dr.executor import SSHExecutor, bastion_for, close_bastions

    data = sample_data(ssh={**sample_data()["ssh"], "user": "rancher"}, bastion={"address": "198.51.100.7"})
    inv = parse_inventory(data, invdir)
    b = inv.bastion
    assert b is not None and (b.address, b.port, b.user, b.key_file, b.known_hosts) == (
        "198.51.100.7", 22, "rancher", None, None,
    )  # fmt: skip
    assert parse_inventory(inventory_to_dict(inv), invdir) == inv
    assert "user" not in inventory_to_dict(inv)["bastion"]  # ssh's: not repeated
    data["bastion"] = {"address": "jump.example.net", "port": 2222, "user": "root"}
    inv = parse_inventory(data, invdir)
    assert inventory_to_dict(inv)["bastion"] == {"address": "jump.example.net", "port": 2222, "user": "root"}
    assert parse_inventory(inventory_to_dict(inv), invdir) == inv
    try:  # every executor of the inventory shares its one bastion; nothing is contacted yet
        ex = executor_for_all = [SSHExecutor(h, inv.ssh, bastion=bastion_for(inv)) for h in inv.hosts]
        assert len({id(e.bastion) for e in executor_for_all}) == 1
        assert "via bastion jump.example.net:2222" in repr(ex[0])
    finally:
        close_bastions()


@pytest.mark.parametrize(
    ("bastion", "problem"),
    [
        ({"port": 22}, "bastion.address: is missing"),
        ({"address": "10.0.0"}, "bastion.address: '10.0.0' is not an IP address or host name"),
        ({"address": "10.0.0.5", "port": 0}, "bastion.port: 0 is out of range"),
        ({"address": "10.0.0.5", "known_hosts": "nope"}, "bastion.known_hosts: "),
        ({"address": "10.0.0.5", "jump": 1}, "bastion.jump: unknown key"),
    ],
)
def test_a_bad_bastion_is_named_with_its_field(invdir: Path, bastion: dict, problem: str) -> None:
    with pytest.raises(InventoryError) as e:
        parse_inventory(sample_data(bastion=bastion), invdir)
    assert problem in str(e.value)


def test_a_bastion_key_that_is_no_key_is_bad_input_naming_the_bastions_field(invdir: Path) -> None:
    import subprocess

    from etcd_dr.errors import InputError
    from etcd_dr.executor import bastion_for, close_bastions, executor_for

    own = invdir / "keys/id_ed25519"  # the hosts' key: a real one, so the bastion's is what fails
    own.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(own)], check=True)
    (invdir / "jump.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBad jump\n")
    (invdir / "jump_key").write_text("not a key\n")
    jump = {"address": "127.0.0.1", "port": 1}
    with pytest.raises(InventoryError, match=r"bastion.key_file: .*jump.pub is a public key"):
        parse_inventory(sample_data(bastion={**jump, "key_file": "jump.pub"}), invdir)
    inv = parse_inventory(sample_data(bastion={**jump, "key_file": "jump_key"}), invdir)
    try:
        assert bastion_for(inv) is bastion_for(inv)  # one per process and credentials
        with pytest.raises(InputError) as e:  # before anything is dialed (port 1 would refuse)
            executor_for(inv, "master1").run(["true"])
        assert str(e.value).startswith("bastion.key_file: ") and "not a usable private key" in str(e.value)
        assert "not a key" not in str(e.value)  # never the file's content
    finally:
        close_bastions()
