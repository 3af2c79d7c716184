"""Adding a role to a host in the operator's inventory YAML: comments and layout kept, only the role
changes, the file is replaced atomically with a backup, and `learner add` offers the edit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from inventory_sample import write_invdir

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.cli import main
from etcd_dr.errors import InputError
from etcd_dr.inventory import Role, load_inventory
from etcd_dr.inventory_edit import add_role, apply_edit, learner_role_edit

COMMENTED = """\
# the lab's inventory: hand-written, keep my comments
cluster: lab          # a name
ssh:
  key_file: "keys/id_ed25519"   # quoted on purpose
  known_hosts: keys/known_hosts
etcd:
  client:
    ca_cert: certs/kube-ca.pem
    cert: certs/kube-etcd-client.pem
    key: certs/kube-etcd-client-key.pem
  client_port: 9         # nothing listens: observing fails fast
  dial_timeout: 0.2
hosts:
  - name: master1
    address: 127.0.0.1
    roles: [etcd, controlplane]   # the voter
  # the second data center
  - name: node1
    address: 127.0.0.2
    roles: [worker]     # a learner some day
  - name: node2
    address: 127.0.0.3
    roles:
      - worker          # block style
    user: admin
"""


def test_flow_list_gets_the_role_and_nothing_else_changes() -> None:
    e = add_role(COMMENTED, "node1", Role.ETCD_LEARNER)
    old, new = COMMENTED.splitlines(), e.new_text.splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [
        (
            "    roles: [worker]     # a learner some day",
            "    roles: [worker, etcd-learner]     # a learner some day",
        )
    ]
    assert "-    roles: [worker]     # a learner some day\n" in e.diff
    assert "+    roles: [worker, etcd-learner]     # a learner some day\n" in e.diff
    assert e.diff.startswith("--- a/inventory.yaml\n+++ b/inventory.yaml\n")


def test_block_list_gets_one_line_indented_as_its_items() -> None:
    e = add_role(COMMENTED, "node2", Role.ETCD_LEARNER)
    assert e.new_text == COMMENTED.replace(
        "      - worker          # block style\n",
        "      - worker          # block style\n      - etcd-learner\n",
    )
    assert [ln for ln in e.diff.splitlines() if ln.startswith(("+", "-"))][2:] == ["+      - etcd-learner"]
    assert yaml.safe_load(e.new_text)["hosts"][2]["roles"] == ["worker", "etcd-learner"]


def test_role_already_there_is_no_edit() -> None:
    e = add_role(COMMENTED, "master1", Role.ETCD)
    assert e.new_text == COMMENTED and e.diff == ""


@pytest.mark.parametrize(
    ("text", "host", "phrase"),
    [
        (COMMENTED, "node9", "no host named 'node9' in hosts"),
        (
            COMMENTED.replace("roles: [worker]     #", "roles: worker     #"),
            "node1",
            "hosts[1].roles: is not a list",
        ),
        ("cluster: x\nhosts: {}\n", "node1", "hosts: is not a list of hosts"),
    ],
)
def test_what_cannot_be_edited_is_named(text: str, host: str, phrase: str) -> None:
    with pytest.raises(InputError, match=phrase.replace("[", r"\[").replace("]", r"\]")):
        add_role(text, host, Role.ETCD_LEARNER)


@pytest.fixture
def invfile(tmp_path: Path) -> Path:
    write_invdir(tmp_path)
    ca = new_ca()  # real client TLS: `learner add` observes the cluster before it plans
    client = issue_cert(ca, "etcd-dr", server=False)
    (tmp_path / "certs/kube-ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "certs/kube-etcd-client.pem").write_bytes(client.cert_pem)
    (tmp_path / "certs/kube-etcd-client-key.pem").write_bytes(client.key_pem)
    f = tmp_path / "inventory.yaml"
    f.write_text(COMMENTED)
    return f


def test_the_edited_file_loads_and_differs_only_by_the_role(invfile: Path) -> None:
    inv = load_inventory(invfile)
    assert learner_role_edit(inv, "master1") is None  # a voter: a different refusal, no edit offered
    assert learner_role_edit(inv, "nope") is None
    edit = learner_role_edit(inv, "node1")
    assert edit is not None and edit.path == invfile
    again, backup = apply_edit(edit)
    assert backup.parent == invfile.parent and backup.name.startswith("inventory.yaml.bak-")
    assert backup.read_text() == COMMENTED  # the old file kept, byte for byte
    assert invfile.read_text() == edit.new_text
    assert again.host("node1").roles == {Role.WORKER, Role.ETCD_LEARNER}
    assert [h for h in again.hosts if h.name != "node1"] == [h for h in inv.hosts if h.name != "node1"]
    assert (again.etcd, again.ssh, again.cluster) == (inv.etcd, inv.ssh, inv.cluster)
    assert learner_role_edit(again, "node1") is None  # done: nothing more to offer
    assert not list(invfile.parent.glob(".inventory.yaml.tmp-*"))


def test_learner_add_refusal_shows_the_diff_and_changes_nothing(invfile: Path, capsys) -> None:
    t0 = time.monotonic()
    rc = main(["learner", "add", "-i", str(invfile), "--host", "node1"])
    out = capsys.readouterr().out
    assert rc == 2, out
    assert "not etcd-learner; add etcd-learner to hosts[1].roles" in out
    assert "the inventory change to make (--update-inventory applies it):" in out
    assert "+    roles: [worker, etcd-learner]     # a learner some day\n" in out
    assert invfile.read_text() == COMMENTED
    assert not list(invfile.parent.glob("inventory.yaml.bak-*"))
    assert time.monotonic() - t0 < 30


def test_learner_add_update_inventory_applies_the_edit_then_proceeds(invfile: Path, capsys) -> None:
    rc = main(["learner", "add", "-i", str(invfile), "--host", "node1", "--update-inventory"])
    out = capsys.readouterr().out
    assert "+    roles: [worker, etcd-learner]     # a learner some day\n" in out
    assert f"updated {invfile} (the old one kept as inventory.yaml.bak-" in out
    assert load_inventory(invfile).host("node1").is_learner
    # it proceeded past the role: nothing answers on 127.0.0.1 here, so the plan stops at quorum
    assert "not etcd-learner" not in out and "the inventory change to make" not in out
    assert rc != 0


def test_learner_add_json_carries_the_edit_and_plan_changes_no_file(invfile: Path, capsys) -> None:
    rc = main(["learner", "add", "-i", str(invfile), "--host", "node1", "--update-inventory", "--plan"])
    out = capsys.readouterr().out
    assert (
        rc == 2 and "the inventory change to make (--update-inventory applies it (not with --plan)):" in out
    )
    assert invfile.read_text() == COMMENTED  # --plan: a dry run writes nothing, the inventory neither

    rc = main(["learner", "add", "-i", str(invfile), "--host", "node1", "--json"])
    got = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert rc == 2 and got["inventory_edit"]["applied"] is False
    assert "+    roles: [worker, etcd-learner]     # a learner some day\n" in got["inventory_edit"]["diff"]

    # applied, then it goes on (here to the SSH login, which fails on the sample's dummy key)
    main(["learner", "add", "-i", str(invfile), "--host", "node1", "--json", "--update-inventory"])
    cap = capsys.readouterr()
    assert "+    roles: [worker, etcd-learner]" in cap.err and f"updated {invfile}" in cap.err
    assert "roles:" not in cap.out and load_inventory(invfile).host("node1").is_learner


def test_an_edit_that_would_change_another_host_is_refused() -> None:
    """node2's roles are an alias of node1's: the text edit would change both; nothing is written."""
    shared = COMMENTED.replace("roles: [worker]     #", "roles: &w [worker]     #").replace(
        "    roles:\n      - worker          # block style\n", "    roles: *w\n"
    )
    assert yaml.safe_load(shared)["hosts"][2]["roles"] == ["worker"]
    with pytest.raises(InputError, match=r"cannot add etcd-learner to hosts\[1\]\.roles in place"):
        add_role(shared, "node1", Role.ETCD_LEARNER)
