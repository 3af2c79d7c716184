"""Lab config validation, names and the CLI's bad-input exits (no root, nothing touched)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from etcd_dr import cli
from etcd_dr.errors import InputError
from etcd_dr.inventory import RuntimeKind
from etcd_dr.lab import lifecycle, net
from etcd_dr.lab.config import (
    HOSTS,
    MAX_PREFIX_LEN,
    Build,
    EtcdSeries,
    HostProc,
    LabConfig,
    LabState,
    default_inventory_path,
    incomplete,
    resolve_config,
)
from etcd_dr.lab.inventory_file import inventory_dict


def test_defaults() -> None:
    cfg = LabConfig()
    assert (cfg.prefix, cfg.subnet, cfg.dir) == ("edr", "10.231.0.0/24", Path("/tmp/etcd-dr/lab-edr"))
    assert [cfg.address(h.name) for h in HOSTS] == [
        "10.231.0.11", "10.231.0.12", "10.231.0.13", "10.231.0.21", "10.231.0.22",
    ]  # fmt: skip
    assert cfg.gateway == "10.231.0.1"
    assert cfg.netns("master1") == "edr-master1"


@pytest.mark.parametrize("prefix", ["", "Edr", "1ab", "a-b", "a_b", "a" * (MAX_PREFIX_LEN + 1), "a b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(InputError, match="prefix"):
        LabConfig(prefix=prefix, dir=Path("/tmp/x"))


def test_longest_prefix_keeps_interface_names_within_15() -> None:
    cfg = LabConfig(prefix="a" * MAX_PREFIX_LEN, dir=Path("/tmp/x"))
    names = [cfg.bridge] + [cfg.veth(h.name) for h in HOSTS]
    assert max(len(n) for n in names) <= 15
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("subnet", "why"),
    [
        ("10.231.0.0/33", "not an IPv4 network"),
        ("10.231.0.5/24", "not an IPv4 network"),  # host bits set
        ("banana", "not an IPv4 network"),
        ("10.231.0.0/28", "too small"),
        ("8.8.8.0/24", "private"),
        ("127.0.0.0/24", "private"),
    ],
)
def test_bad_subnet(subnet: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        LabConfig(subnet=subnet)


@pytest.mark.parametrize("d", ["/etc/lab", "/var/tmp/lab", "/root/lab", "/usr/local/lab", "/home/x", "/"])
def test_lab_dir_under_an_overlaid_dir_is_refused(d: str) -> None:
    with pytest.raises(InputError, match="lab dir"):
        LabConfig(dir=Path(d))


def test_other_subnet_addresses() -> None:
    cfg = LabConfig(prefix="ea", subnet="10.231.1.0/24", dir=Path("/tmp/etcd-dr/lab-ea"))
    assert cfg.address("node2") == "10.231.1.22"
    assert cfg.veth("node2") == "vean2"
    with pytest.raises(InputError, match="no lab host named 'node3'"):
        cfg.address("node3")


def test_default_inventory_path_follows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETCD_DR_LAB_DIR", raising=False)
    monkeypatch.delenv("ETCD_DR_LAB_PREFIX", raising=False)
    assert default_inventory_path() == Path("/tmp/etcd-dr/lab-edr/inventory.yaml")
    monkeypatch.setenv("ETCD_DR_LAB_PREFIX", "zz")
    assert default_inventory_path() == Path("/tmp/etcd-dr/lab-zz/inventory.yaml")
    monkeypatch.setenv("ETCD_DR_LAB_DIR", "/srv2/lab")
    assert default_inventory_path() == Path("/srv2/lab/inventory.yaml")


def test_state_file_round_trip(tmp_path: Path) -> None:
    cfg = LabConfig(prefix="ut", subnet="10.231.9.0/24", dir=tmp_path / "lab", runtime=RuntimeKind.PROCESS)
    st = LabState(cfg, image=None, etcd_version="3.4.23", etcd_bindir="/usr/bin")
    st.with_host("master1", HostProc(123, 456)).save()
    back = LabState.load(cfg.dir)
    assert back is not None
    assert back.config == cfg
    assert back.hosts == {"master1": HostProc(123, 456)}
    assert LabState.load(tmp_path / "nothing") is None


def test_inventory_dict_matches_the_documented_format() -> None:
    cfg = LabConfig(prefix="ut", subnet="10.231.9.0/24", dir=Path("/tmp/etcd-dr/lab-ut"))
    d = yaml.safe_load(yaml.safe_dump(inventory_dict(cfg, image="lab/etcd:3.4.23", binary="/usr/bin/etcd")))
    assert d["rehearsal"] is True
    assert d["ssh"]["key_file"] == "keys/id_ed25519" and d["ssh"]["known_hosts"] == "keys/known_hosts"
    assert d["etcd"]["runtime"] == "docker" and d["etcd"]["image"] == "lab/etcd:3.4.23"
    assert set(d["etcd"]["client"]) == {"ca_cert", "cert", "key"}
    roles = {h["name"]: h["roles"] for h in d["hosts"]}
    assert roles == {
        "master1": ["etcd", "controlplane"],
        "master2": ["etcd", "controlplane"],
        "master3": ["etcd", "controlplane"],
        "node1": ["worker"],
        "node2": ["worker"],
    }


# --- the CLI: exit 2 with a clear message on bad input, before touching anything


def test_lab_up_as_non_root_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 1000)
    assert cli.main(["lab", "up", "--prefix", "ut"]) == 2
    assert "needs root" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["lab", "up", "--prefix", "ut", "--subnet", "10.0.0.0/30"], "too small"),
        (["lab", "up", "--prefix", "UT"], "prefix"),
        (["lab", "up", "--prefix", "ut", "--dir", "/etc/lab"], "overlays"),
        (["lab", "power", "--prefix", "ut", "master9", "off"], "no lab host named 'master9'"),
    ],
)
def test_bad_input_exits_2(
    argv: list[str], msg: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 0)
    monkeypatch.setenv("ETCD_DR_LAB_DIR", "/tmp/etcd-dr/lab-unit-test-nonexistent")
    assert cli.main(argv) == 2
    assert msg in capsys.readouterr().err


def test_written_inventory_loads_as_the_lab_inventory(tmp_path: Path) -> None:
    from etcd_dr.inventory import load_inventory
    from etcd_dr.lab.inventory_file import lab_inventory, write_inventory

    for runtime in RuntimeKind:
        cfg = LabConfig(prefix="ut", subnet="10.231.9.0/24", dir=tmp_path / runtime.value, runtime=runtime)
        for f in ("keys/id_ed25519", "keys/known_hosts", "certs/kube-ca.pem", "certs/kube-etcd-client.pem",
                  "certs/kube-etcd-client-key.pem"):  # fmt: skip
            (cfg.dir / f).parent.mkdir(parents=True, exist_ok=True)
            (cfg.dir / f).write_text("x")
        path = write_inventory(cfg, image="lab/etcd:3.4.23", binary="/usr/bin/etcd")
        loaded = load_inventory(path)
        assert loaded == lab_inventory(cfg, image="lab/etcd:3.4.23", binary="/usr/bin/etcd")
        assert loaded.ssh.key_file == cfg.dir / "keys" / "id_ed25519"


# --- no state file: the subnet asked for, never the default (another lab may be on it)


def test_resolve_config_without_state_uses_the_env_subnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCD_DR_LAB_SUBNET", "10.231.112.0/24")
    cfg = resolve_config(prefix="honeb", lab_dir=tmp_path / "none")
    assert (cfg.prefix, cfg.subnet) == ("honeb", "10.231.112.0/24")
    # a state file wins: it is the lab's own subnet
    LabState(LabConfig(prefix="honeb", subnet="10.231.111.0/24", dir=tmp_path / "lab")).save()
    assert resolve_config(prefix="honeb", lab_dir=tmp_path / "lab").subnet == "10.231.111.0/24"


# --- an interrupted `lab up` (a SIGINT during the learner add) is not a whole lab


def _state(tmp_path: Path, build: Build, learner: bool = True) -> LabState:
    cfg = LabConfig(
        prefix="ut",
        subnet="10.231.9.0/24",
        dir=tmp_path / "lab",
        learner_etcd=EtcdSeries.V3_5 if learner else None,
    )
    return LabState(cfg, etcd_version="3.4.23", build=build)


def test_build_stage_round_trip_and_old_state_files(tmp_path: Path) -> None:
    st = _state(tmp_path, Build.VOTERS)
    st.save()
    back = LabState.load(st.config.dir)
    assert back is not None and back.build is Build.VOTERS
    data = json.loads(st.config.state_path.read_text())
    del data["build"]  # written before the field existed: nothing tells, taken as built
    st.config.state_path.write_text(json.dumps(data))
    back = LabState.load(st.config.dir)
    assert back is not None and back.build is Build.COMPLETE and incomplete(back) is None
    # a new state starts unbuilt: only `up` finishing says complete
    assert LabState(st.config).build is Build.HOSTS


def test_incomplete_says_what_is_missing_and_the_fix(tmp_path: Path) -> None:
    assert incomplete(_state(tmp_path, Build.COMPLETE)) is None
    rebuild = (
        f"`etcd-dr lab up --prefix ut --subnet 10.231.9.0/24 --dir {tmp_path / 'lab'} --etcd 3.4 "
        "--runtime docker --learner --learner-etcd 3.5`"
    )
    msg = incomplete(_state(tmp_path, Build.VOTERS))
    assert msg == (
        "lab 'ut' is incomplete: its `lab up` stopped before node1 joined as the learner it asked for "
        f"(--learner 3.5); finish it with `etcd-dr lab up --resume`, or rebuild it: {rebuild}"
    )
    msg = incomplete(_state(tmp_path, Build.HOSTS))
    assert msg is not None and "before etcd ran on the voters" in msg and rebuild in msg
    assert "--resume" not in msg  # nothing on the disks to resume


def test_lab_status_says_incomplete_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    st = _state(tmp_path, Build.VOTERS)
    st.save()
    assert cli.main(["lab", "status", "--prefix", "ut", "--dir", str(st.config.dir)]) == 1
    out = capsys.readouterr().out
    assert "lab 'ut' is incomplete" in out and "etcd-dr lab up --resume" in out


def test_resume_of_a_lab_never_provisioned_is_refused_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 0)
    touched: list[str] = []
    monkeypatch.setattr(lifecycle, "clean", lambda *a, **k: touched.append("clean"))
    monkeypatch.setattr(lifecycle.net, "check_subnet_free", lambda *a, **k: touched.append("routes"))
    st = _state(tmp_path, Build.HOSTS)
    st.save()
    with pytest.raises(InputError, match=r"cannot resume: lab 'ut' is incomplete.*rebuild it"):
        lifecycle.up(st.config, resume=True, say=print)
    assert touched == []


def test_a_refused_subnet_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The subnet is checked before cleaning: cleaning installs a guard route (and removes names)."""
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 0)
    touched: list[str] = []
    monkeypatch.setattr(lifecycle, "clean", lambda *a, **k: touched.append("clean"))
    monkeypatch.setattr(lifecycle.hosts, "wipe", lambda *a, **k: touched.append("wipe"))

    def in_use(cfg: LabConfig, own_bridges: object = ()) -> None:
        raise InputError(f"lab subnet {cfg.subnet}: in use")

    monkeypatch.setattr(lifecycle.net, "check_subnet_free", in_use)
    with pytest.raises(InputError, match="in use"):
        lifecycle.up(_state(tmp_path, Build.HOSTS).config, say=print)
    assert touched == []


def test_commands_on_the_lab_inventory_warn_of_an_incomplete_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from etcd_dr.cli import common as cliutil

    st = _state(tmp_path, Build.VOTERS)
    st.save()
    st.config.inventory_path.write_text("cluster: lab\n")
    monkeypatch.delenv("ETCD_DR_INVENTORY", raising=False)
    monkeypatch.setenv("ETCD_DR_LAB_DIR", str(st.config.dir))
    monkeypatch.setattr(net, "running_lab", lambda: st)  # as if its bridge were up
    assert cliutil.inventory_path(None) == st.config.inventory_path
    assert "warning: lab 'ut' is incomplete" in capsys.readouterr().err
    monkeypatch.setattr(net, "running_lab", lambda: replace(st, build=Build.COMPLETE))
    cliutil.inventory_path(None)
    assert capsys.readouterr().err == ""


def test_finding_the_labs_inventory_imports_neither_the_lab_nor_httpx(tmp_path: Path) -> None:
    """`etcd-dr recover` without -i looks for the lab's inventory: that look imports the lab's config
    and net only (lifecycle with its alerting's httpx cost ~0.37 s of the recovery's start)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from etcd_dr.cli import common\n"
        "from etcd_dr.errors import InputError\n"
        "try:\n"
        "    common.inventory_path(None)\n"
        "except InputError:\n"
        "    pass\n"
        "print(sorted(m for m in ('etcd_dr.lab.lifecycle', 'httpx') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ETCD_DR_INVENTORY"}
    env["ETCD_DR_LAB_DIR"] = str(tmp_path / "nolab")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.strip() == "[]"
