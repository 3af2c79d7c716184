"""The optional inventory sections: snapshots (retention, off-site dir or S3), ca, check."""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory_sample import sample_data, write_invdir

from etcd_dr.inventory import InventoryError, OffsiteKind, inventory_to_dict, parse_inventory


@pytest.fixture
def invdir(tmp_path: Path) -> Path:
    return write_invdir(tmp_path)


def test_defaults_without_sections(invdir: Path) -> None:
    inv = parse_inventory(sample_data(), invdir, invdir / "inventory.yaml")
    assert inv.snapshots is None
    assert inv.snapshot_settings().dir == invdir / "snapshots"
    assert inv.ca_host().name == "master1"
    assert inv.ca_key_path() == "/etc/kubernetes/ssl/kube-ca-key.pem"
    assert inv.check.cert_min_days == 30


def test_sections_load_and_round_trip(invdir: Path) -> None:
    data = sample_data(
        snapshots={
            "dir": "snaps",
            "keep_last": 3,
            "keep_daily": 0,
            "keep_weekly": 2,
            "offsite": {"s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "etcd-dr", "prefix": "lab/"}},
        },
        ca={"host": "master2", "key": "/root/ca-key.pem"},
        check={"cert_min_days": 14, "max_clock_skew": 0.5},
    )
    inv = parse_inventory(data, invdir)
    assert inv.snapshots.dir == invdir / "snaps" and inv.snapshots.keep_daily == 0
    assert inv.snapshots.offsite.kind is OffsiteKind.S3 and inv.snapshots.offsite.s3.bucket == "etcd-dr"
    assert inv.ca_host().name == "master2" and inv.ca_key_path() == "/root/ca-key.pem"
    assert inv.ca_cert_path() == "/etc/kubernetes/ssl/kube-ca.pem"
    assert inv.check.max_clock_skew == 0.5
    assert parse_inventory(inventory_to_dict(inv, relative_to=invdir), invdir) == inv


@pytest.mark.parametrize(
    ("extra", "path", "phrase"),
    [
        ({"snapshots": {"keep_last": 2}}, "snapshots.dir", "is missing"),
        ({"snapshots": {"dir": "s", "keep_daily": -1}}, "snapshots.keep_daily", "0 turns it off"),
        ({"snapshots": {"dir": "s", "offsite": {}}}, "snapshots.offsite", "exactly one of dir or s3"),
        (
            {"snapshots": {"dir": "s", "offsite": {"s3": {"endpoint": "nope", "bucket": "b1b"}}}},
            "snapshots.offsite.s3.endpoint",
            "is not a URL",
        ),
        (
            {
                "snapshots": {
                    "dir": "s",
                    "offsite": {"s3": {"endpoint": "http://x:1", "bucket": "Bad_Bucket"}},
                }
            },
            "snapshots.offsite.s3.bucket",
            "lower-case",
        ),
        ({"ca": {"host": "master9"}}, "ca.host", "is not a host of this inventory"),
        ({"ca": {"key": "relative.pem"}}, "ca.key", "absolute path"),
        ({"check": {"cert_min_days": 0}}, "check.cert_min_days", "not positive"),
        ({"check": {"max_skew": 1}}, "check.max_skew", "did you mean 'max_clock_skew'"),
    ],
)
def test_section_errors(invdir: Path, extra: dict, path: str, phrase: str) -> None:
    with pytest.raises(InventoryError) as e:
        parse_inventory(sample_data(**extra), invdir)
    assert any(p.startswith(f"{path}:") and phrase in p for p in e.value.problems), e.value.problems


def test_power_drivers_load_round_trip_and_run(invdir: Path) -> None:
    from etcd_dr.executor import LocalExecutor
    from etcd_dr.inventory import PowerDriver
    from etcd_dr.recovery.fencing import Power, power_state

    data = sample_data(
        power={"driver": "command", "argv": ["echo", "{host} at {address} is stopped"], "off": r"\bstopped\b"}
    )
    data["hosts"][1]["power"] = {
        "driver": "ipmi",
        "address": "{host}-bmc",
        "user": "fencer",
        "password_env": "NOPE_PW",
    }
    inv = parse_inventory(data, invdir, invdir / "inventory.yaml")
    m1, m2 = inv.hosts[0], inv.hosts[1]
    assert inv.power_for(m1).driver is PowerDriver.COMMAND and inv.power_for(m2).driver is PowerDriver.IPMI
    assert parse_inventory(inventory_to_dict(inv), invdir, invdir / "inventory.yaml") == inv
    # the command driver, really run: its output says off
    assert power_state(inv, m1, inv.power_for(m1), LocalExecutor()) == (
        Power.OFF,
        "powered off (`echo` output matches '\\\\bstopped\\\\b')",
    )
    # ipmi without its password variable: never evidence, and the message names the variable only
    got = power_state(inv, m2, inv.power_for(m2), LocalExecutor())
    assert got[0] is Power.UNKNOWN and "NOPE_PW, which is not set" in got[1]


def test_power_section_errors_name_the_field(invdir: Path) -> None:
    data = sample_data(power={"driver": "command", "argv": ["x", "{nope}"], "off": "(", "user": "u"})
    data["hosts"][0]["power"] = {"driver": "ipmi", "address": "bmc"}
    data["hosts"][1]["power"] = {"driver": "wol"}
    with pytest.raises(InventoryError) as e:
        parse_inventory(data, invdir)
    p = "\n".join(e.value.problems)
    assert "power.user: is not a setting of driver command; remove it" in p
    assert "power.off: '(' is not a regular expression" in p
    assert "power.argv: '{nope}': only {host} and {address} may be filled in" in p
    assert "hosts[0].power.user: is missing; driver ipmi needs address, user, password_env" in p
    assert "hosts[1].power.driver: 'wol' is not a power driver; use one of lab, ipmi, command" in p
