"""One state for the CLI and the flows: where the journal, lock, ledger, audit log and catalog live
(Inventory.state_path), and credentials held in memory (InMemoryFile) that never show their content."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from inventory_sample import sample_data, write_invdir

from etcd_dr.errors import InputError
from etcd_dr.faults.plan import FaultLedger
from etcd_dr.inventory import InMemoryFile, InventoryError, inventory_to_dict, parse_inventory
from etcd_dr.recovery.run import journal_path


@pytest.fixture
def invdir(tmp_path: Path) -> Path:
    return write_invdir(tmp_path)


def test_default_state_is_beside_the_audit_log_whatever_the_cwd(
    invdir: Path, tmp_path_factory, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    inv = parse_inventory(sample_data(), invdir)
    assert inv.audit_log == invdir / "audit.jsonl"
    assert inv.state_path() == invdir
    assert journal_path(inv) == invdir / "recover-lab.json"
    assert FaultLedger.for_inventory(inv).path == invdir / "faults-lab.json"
    assert inv.snapshot_settings().dir == invdir / "snapshots"


def test_an_explicit_state_dir_holds_journal_ledger_catalog_and_default_audit_log(invdir: Path) -> None:
    data = sample_data(state_dir="state")
    del data["audit_log"]
    inv = parse_inventory(data, invdir)
    st = invdir / "state"
    assert inv.state_dir == st and inv.state_path() == st
    assert inv.audit_log == st / "audit.jsonl"
    assert journal_path(inv) == st / "recover-lab.json"
    assert inv.snapshot_settings().dir == st / "snapshots"
    again = parse_inventory(inventory_to_dict(inv, relative_to=invdir), invdir)
    assert again.state_dir == st


def test_an_audit_log_elsewhere_takes_the_state_with_it(invdir: Path, tmp_path_factory) -> None:
    logs = tmp_path_factory.mktemp("logs")
    inv = parse_inventory(sample_data(audit_log=str(logs / "a.jsonl")), invdir)
    assert inv.state_path("x") == logs / "x"


def test_no_state_anywhere_is_an_input_error_not_the_cwd(invdir: Path) -> None:
    data = sample_data()
    del data["audit_log"]
    inv = dataclasses.replace(parse_inventory(data, invdir), base_dir=None, source=None)
    with pytest.raises(InputError, match=r"^state_dir: .*set state_dir"):
        inv.state_path()
    with pytest.raises(InputError, match="state_dir"):
        inv.snapshot_settings()


def test_ssh_agent_without_key_file(invdir: Path) -> None:
    data = sample_data()
    del data["ssh"]["key_file"]
    with pytest.raises(InventoryError, match=r"ssh.key_file: is missing; .*ssh.agent: true"):
        parse_inventory(data, invdir)
    data["ssh"]["agent"] = True
    inv = parse_inventory(data, invdir)
    assert inv.ssh.key_file is None and inv.ssh.agent
    assert "key_file" not in inventory_to_dict(inv)["ssh"]
    data["ssh"]["agent"] = "yes"
    with pytest.raises(InventoryError, match=r"ssh\.agent: 'yes' is not a boolean"):
        parse_inventory(data, invdir)


def test_in_memory_credentials_never_show_their_content(invdir: Path) -> None:
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n"
    data = sample_data()
    data["ssh"]["key_file"] = InMemoryFile(secret, "ssh.key_file (block)")
    data["etcd"]["client"]["key"] = InMemoryFile(secret.encode(), "etcd.client.key (block)")
    inv = parse_inventory(data, invdir)
    assert bytes(inv.ssh.key_file) == secret.encode()  # what paramiko and gRPC are handed
    assert isinstance(inv.etcd.client.key, bytes)
    shown = f"{inv!r} {inv} {inv.ssh.key_file} {inv.etcd.client.key!r} {inv.ssh.key_file:>5}"
    assert "c2VjcmV0" not in shown
    assert "<ssh.key_file (block) held in memory>" in shown
