"""Inventory loading: a valid file loads; each malformed field gets its own precise message; every
problem is reported at once; loading contacts nothing."""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path

import pytest
import yaml
from inventory_sample import VALID, write_invdir

from etcd_dr.errors import InputError
from etcd_dr.inventory import (
    Inventory,
    InventoryError,
    Role,
    RuntimeKind,
    inventory_to_dict,
    load_inventory,
    parse_inventory,
)


@pytest.fixture
def invdir(tmp_path: Path) -> Path:
    return write_invdir(tmp_path)


def data() -> dict:
    return yaml.safe_load(VALID)


def problems_of(d: object, base: Path) -> tuple[str, ...]:
    with pytest.raises(InventoryError) as ei:
        parse_inventory(d, base)
    return ei.value.problems


def test_valid_inventory_loads(invdir: Path):
    inv = load_inventory(invdir / "inventory.yaml")
    assert isinstance(inv, Inventory)
    assert inv.cluster == "lab" and inv.rehearsal is True
    assert inv.audit_log == invdir / "audit.jsonl"  # relative to the file's directory
    assert inv.ssh.key_file == invdir / "keys/id_ed25519"
    assert inv.ssh.connect_timeout == 3.0 and isinstance(inv.ssh.connect_timeout, float)
    assert inv.etcd.runtime is RuntimeKind.DOCKER and inv.etcd.image == "lab/etcd:3.4.23"
    assert inv.etcd.client.key == invdir / "certs/kube-etcd-client-key.pem"
    assert [h.name for h in inv.voters] == ["master1", "master2"]
    m1, n1 = inv.host("master1"), inv.host("node1")
    assert m1.roles == frozenset({Role.ETCD, Role.CONTROLPLANE})
    assert (m1.user, m1.port, m1.sudo) == ("root", 22, False)  # from ssh.*
    assert (n1.user, n1.port, n1.sudo, n1.is_learner) == ("admin", 2222, True, True)
    assert inv.source == invdir / "inventory.yaml"


def test_defaults_fill_in(invdir: Path):
    d = {
        "cluster": "c1",
        "ssh": {"key_file": "keys/id_ed25519", "known_hosts": "keys/known_hosts", "port": 2200},
        "etcd": {"client": data()["etcd"]["client"]},
        "hosts": [{"name": "m1", "address": "m1.example.org", "roles": ["etcd"]}],
    }
    inv = parse_inventory(d, invdir)
    assert inv.etcd.runtime is RuntimeKind.DOCKER and inv.etcd.election_timeout == 5000
    assert inv.hosts[0].port == 2200 and inv.audit_log is None and inv.rehearsal is False


def test_roundtrip_through_dict(invdir: Path):
    inv = load_inventory(invdir / "inventory.yaml")
    again = parse_inventory(inventory_to_dict(inv), Path("/nonexistent-base"))
    assert again == inv
    rel = inventory_to_dict(inv, relative_to=invdir)
    assert rel["ssh"]["key_file"] == "keys/id_ed25519"
    assert parse_inventory(yaml.safe_load(yaml.safe_dump(rel)), invdir) == inv


def _set(d: dict, path: str, value: object) -> dict:
    """Set a dotted path ('hosts.1.roles.0') in a deep copy; value DELETE removes the key."""
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    cur: object = d
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]  # type: ignore[index]
    key: object = int(last) if isinstance(cur, list) else last
    if value is DELETE:
        del cur[key]  # type: ignore[index,attr-defined]
    else:
        cur[key] = value  # type: ignore[index]
    return d


DELETE = object()

# (id, edit path, value, expected problem path, phrase of the message)
CASES = [
    (
        "address",
        "hosts.2.address",
        "10.0.0",
        "hosts[2].address",
        "'10.0.0' is not an IP address or host name",
    ),
    ("address-int", "hosts.0.address", 10.5, "hosts[0].address", "is not an IP address or host name"),
    (
        "role",
        "hosts.1.roles.0",
        "master",
        "hosts[1].roles[0]",
        "'master' is not a role; use one of etcd, etcd-learner",
    ),
    ("roles-str", "hosts.1.roles", "etcd", "hosts[1].roles", "not a list of roles"),
    (
        "runtime",
        "etcd.runtime",
        "podman",
        "etcd.runtime",
        "'podman' is not a runtime; use one of docker, process",
    ),
    ("key-missing-file", "ssh.key_file", "/x/y", "ssh.key_file", "/x/y does not exist"),
    ("known-hosts-file", "ssh.known_hosts", "nope/kh", "ssh.known_hosts", "does not exist (relative to"),
    ("client-cert", "etcd.client.cert", "certs/missing.pem", "etcd.client.cert", "does not exist"),
    ("typo-top", "rehersal", True, "rehersal", "unknown key; did you mean 'rehearsal'?"),
    ("typo-ssh", "ssh.conect_timeout", 3, "ssh.conect_timeout", "did you mean 'connect_timeout'?"),
    ("typo-host", "hosts.0.adress", "1.2.3.4", "hosts[0].adress", "did you mean 'address'?"),
    ("dup-name", "hosts.1.name", "master1", "hosts[1].name", "'master1' is already used by hosts[0]"),
    ("dup-address", "hosts.2.address", "10.231.0.11", "hosts[2].address", "already used by hosts[0]"),
    ("ssh-port", "ssh.port", 70000, "ssh.port", "70000 is out of range; use a port number 1-65535"),
    ("host-port", "hosts.0.port", 0, "hosts[0].port", "out of range"),
    ("client-port", "etcd.client_port", "2379", "etcd.client_port", "is not a port number"),
    ("timeout-zero", "ssh.connect_timeout", 0, "ssh.connect_timeout", "is not positive"),
    ("timeout-neg", "etcd.request_timeout", -1, "etcd.request_timeout", "is not positive"),
    ("timeout-str", "ssh.command_timeout", "60s", "ssh.command_timeout", "is not a number"),
    ("both-roles", "hosts.2.roles", ["etcd", "etcd-learner"], "hosts[2].roles", "both etcd and etcd-learner"),
    ("cluster-name", "cluster", "my cluster!", "cluster", "is not a valid name; use 1-63 letters"),
    ("host-name", "hosts.0.name", "master 1", "hosts[0].name", "is not a valid name"),
    ("bool", "rehearsal", "yes please", "rehearsal", "is not a boolean; write true or false"),
    ("abs-path", "etcd.data_dir", "var/lib/etcd", "etcd.data_dir", "is not an absolute path"),
    ("election", "etcd.election_timeout", 1000, "etcd.election_timeout", "less than 5 x heartbeat_interval"),
    ("same-ports", "etcd.peer_port", 2379, "etcd.peer_port", "same as client_port"),
    ("missing-hosts", "hosts", DELETE, "hosts", "is missing"),
    ("missing-key", "ssh.key_file", DELETE, "ssh.key_file", "is missing"),
    ("ssh-not-map", "ssh", ["a"], "ssh", "is a list, not a mapping"),
    ("container", "etcd.container", "bad name", "etcd.container", "Docker container name"),
    ("user", "hosts.0.user", "ro ot", "hosts[0].user", "login name"),
]


@pytest.mark.parametrize(
    ("edit", "value", "where", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_problem_has_its_own_message(invdir: Path, edit, value, where, phrase):
    problems = problems_of(_set(data(), edit, value), invdir)
    mine = [p for p in problems if p.startswith(f"{where}: ")]
    assert mine, problems
    assert any(phrase in p for p in mine), mine
    # one edit, one problem: no cascade of follow-up complaints
    assert len(problems) == 1, problems


def test_no_voter(invdir: Path):
    d = data()
    for h in d["hosts"]:
        h["roles"] = ["worker"]
    assert problems_of(d, invdir) == ("hosts: no host has the role etcd; at least one etcd voter is needed",)


def test_public_key_given_as_private(invdir: Path):
    (invdir / "keys/id_ed25519.pub").write_text("ssh-ed25519 AAAAC3Nza... me\n")
    (problem,) = problems_of(_set(data(), "ssh.key_file", "keys/id_ed25519.pub"), invdir)
    assert problem.startswith("ssh.key_file: ") and "is a public key" in problem


def test_all_problems_reported_together(invdir: Path):
    d = data()
    d["hosts"][2]["address"] = "10.0.0"
    d["hosts"][1]["roles"] = ["master"]
    d["etcd"]["runtime"] = "podman"
    d["ssh"]["key_file"] = "/x/y"
    d["ssh"]["port"] = 0
    d["clustr"] = "x"
    with pytest.raises(InventoryError) as ei:
        parse_inventory(d, invdir, invdir / "inventory.yaml")
    paths = sorted(p.split(":")[0] for p in ei.value.problems)
    assert paths == sorted(
        ["hosts[2].address", "hosts[1].roles[0]", "etcd.runtime", "ssh.key_file", "ssh.port", "clustr"]
    )
    msg = str(ei.value)
    assert msg.startswith(f"{invdir / 'inventory.yaml'}: 6 problems")
    assert isinstance(ei.value, InputError)  # the CLI maps it to exit 2


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    f = tmp_path / "inv.yaml"
    f.write_text("cluster: lab\nhosts:\n  - name: m1\n    address: [unclosed\n")
    with pytest.raises(InventoryError) as ei:
        load_inventory(f)
    (p,) = ei.value.problems
    assert p.startswith(f"{f}: YAML error at line ") and "fix the YAML" in p


def test_duplicate_yaml_key_is_an_error(invdir: Path):
    f = invdir / "dup.yaml"
    f.write_text(VALID.replace("  port: 22\n", "  port: 22\n  port: 2222\n", 1))
    with pytest.raises(InventoryError) as ei:
        load_inventory(f)
    (p,) = ei.value.problems
    assert "duplicate key 'port'" in p and "line 7" in p


def test_missing_file(tmp_path: Path):
    with pytest.raises(InventoryError) as ei:
        load_inventory(tmp_path / "nope.yaml")
    (problem,) = ei.value.problems
    assert problem.startswith(f"{tmp_path / 'nope.yaml'}: no such file; pass the path of an inventory YAML")


def test_not_a_mapping(tmp_path: Path):
    assert problems_of(["a"], tmp_path) == (
        "(top level): is a list, not a mapping; write `key: value` lines under it",
    )


def test_check_files_false_skips_existence(tmp_path: Path):
    inv = parse_inventory(data(), tmp_path, check_files=False)
    assert inv.ssh.key_file == tmp_path / "keys/id_ed25519"


def test_loading_contacts_nothing(invdir: Path, monkeypatch):
    """Unreachable addresses, no network: loading is instant and opens no connection, no DNS."""

    def forbidden(*a, **k):
        raise AssertionError("inventory loading touched the network")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    text = VALID.replace("10.231.0.11", "192.0.2.1").replace("10.231.0.12", "unreachable.invalid")
    (invdir / "far.yaml").write_text(text)
    t0 = time.monotonic()
    inv = load_inventory(invdir / "far.yaml")
    assert time.monotonic() - t0 < 0.5
    assert inv.host("master2").address == "unreachable.invalid"


# --- an empty inventory: say so, and show what a minimal one holds (it used to say "0 problems")


@pytest.mark.parametrize("text", ["", "\n\n", "# an inventory, some day\n", "---\n", "{}\n"])
def test_empty_file_says_it_is_empty_and_shows_a_minimal_inventory(tmp_path: Path, text: str) -> None:
    from etcd_dr.inventory import MINIMAL_INVENTORY

    path = tmp_path / "inv.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as ei:
        load_inventory(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: 1 problem\n  - the inventory is empty")
    assert "0 problems" not in msg
    for line in MINIMAL_INVENTORY.splitlines():
        assert f"\n      {line}" in msg  # the whole example, indented under the problem


def test_the_minimal_inventory_shown_is_valid(tmp_path: Path) -> None:
    from etcd_dr.inventory import MINIMAL_INVENTORY

    inv = parse_inventory(yaml.safe_load(MINIMAL_INVENTORY), tmp_path, check_files=False)
    assert inv.cluster == "prod-eu1" and [h.name for h in inv.voters] == ["master1"]
    assert inv.ssh.known_hosts == tmp_path / "keys" / "known_hosts"


@pytest.mark.parametrize(
    ("hosts", "what"), [(DELETE, "is missing"), (None, "is empty"), ([], "is an empty list")]
)
def test_no_hosts_shows_what_a_host_holds(invdir: Path, hosts: object, what: str) -> None:
    d = data()
    if hosts is DELETE:
        del d["hosts"]
    else:
        d["hosts"] = hosts
    (p,) = [p for p in problems_of(d, invdir) if p.startswith("hosts")]
    assert p.startswith(f"hosts: {what}: no host; list each with its name, address and roles:")
    example = p.split("\n", 1)[1].splitlines()
    assert [ln.split("#")[0].strip() for ln in example] == [
        "hosts:",
        "- name: master1",
        "address: 10.0.0.11",
        "roles: [etcd, controlplane]",
    ]
