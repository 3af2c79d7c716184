"""One lab must never cut another off the machine (issue 8). With this session's lab up, commands
for ANOTHER lab (prefix `honeb` or ETCD_DR_LAB_OTHER_PREFIX, with no state file, or a stale one that
names this lab's subnet) leave this lab's route alone, and a refused `lab up` changes no route.

Before the fix: `lab down` without a state file used the default subnet whatever ETCD_DR_LAB_SUBNET
said, and `ip route replace unreachable <subnet>` swapped out the connected route of a lab that was
up; `lab up` on a subnet in use cleaned (installing that route) before it refused."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from etcd_dr.lab import net
from etcd_dr.lab.config import DEFAULT_SUBNET, HOSTS, Build, LabConfig, LabState

from .conftest import Lab

pytestmark = pytest.mark.lab

OTHER_PREFIX = os.environ.get("ETCD_DR_LAB_OTHER_PREFIX") or "honeb"
OTHER_SUBNET = os.environ.get("ETCD_DR_LAB_OTHER_SUBNET") or "10.231.112.0/24"


def _routes(*subnets: str) -> list[dict[str, object]]:
    """The main table's routes that touch these subnets (other labs on the machine may come and go:
    only these must stay as they were)."""
    nets = [ipaddress.IPv4Network(s) for s in subnets]
    out = net.ip("-4", "-j", "route", "show", "table", "main").stdout
    return [
        r
        for r in json.loads(out or "[]")
        if r.get("dst") not in (None, "default")
        and any(ipaddress.IPv4Network(str(r["dst"]), strict=False).overlaps(n) for n in nets)
    ]


def _other(lab_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`etcd-dr lab ARGS` for the other lab, as its engineer would run it."""
    env = {
        **os.environ,
        "ETCD_DR_LAB_PREFIX": OTHER_PREFIX,
        "ETCD_DR_LAB_SUBNET": OTHER_SUBNET,
        "ETCD_DR_LAB_DIR": str(lab_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "lab", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _answers(lab: Lab) -> bool:
    r = lab.etcdctl("endpoint", "health")
    return r.returncode == 0 and (r.stdout + r.stderr).count("is healthy") == 3


@pytest.fixture
def guarded(running_lab: Lab) -> Iterator[Lab]:
    """This session's lab, up (rebuilt if an earlier test took it down); afterwards nothing of the
    other lab is left (its guard route, names) and, should a broken build have replaced it, this
    lab's connected route is put back."""
    lab = running_lab
    cfg = lab.cfg
    other = ipaddress.IPv4Network(OTHER_SUBNET)
    had_other_guard = any(r.get("type") == "unreachable" for r in _routes(OTHER_SUBNET))
    if not net.link_exists(cfg.bridge):
        pytest.fail(f"the session lab's bridge {cfg.bridge} is not up")
    yield lab
    if not had_other_guard:
        net.ip("route", "del", "unreachable", str(other), check=False)
    mine = str(cfg.network)
    if not any(r.get("dev") == cfg.bridge for r in _routes(mine)):  # the old bug replaced it
        net.ip("route", "del", "unreachable", mine, check=False)
        net.ip("route", "add", mine, "dev", cfg.bridge, "proto", "kernel", "scope", "link",
               "src", cfg.gateway, check=False)  # fmt: skip
    o = LabConfig(prefix=OTHER_PREFIX, subnet=OTHER_SUBNET, dir=Path("/tmp/unused"))
    assert not net.link_exists(o.bridge) and not any(net.netns_exists(o.netns(h.name)) for h in HOSTS)


def test_another_labs_down_without_state_leaves_this_lab_alone(guarded: Lab, tmp_path: Path) -> None:
    lab, mine = guarded, str(guarded.cfg.network)
    before = _routes(mine, DEFAULT_SUBNET)
    assert any(r.get("dev") == lab.cfg.bridge for r in before), before
    r = _other(tmp_path / "other", "down", "--wipe")
    assert r.returncode == 0, r.stderr
    assert _routes(mine, DEFAULT_SUBNET) == before  # neither this lab's nor the default subnet's
    # its own subnet, the one its env names, got the guard
    assert [x.get("type") for x in _routes(OTHER_SUBNET)] == ["unreachable"]
    assert _answers(lab)


def test_a_stale_state_naming_this_labs_subnet_does_not_cut_it_off(guarded: Lab, tmp_path: Path) -> None:
    """A lab that once ran on this subnet and was left down: its `lab down --wipe` must not replace
    the connected route of the lab that uses the subnet now."""
    lab, mine = guarded, str(guarded.cfg.network)
    stale = LabConfig(prefix=OTHER_PREFIX, subnet=mine, dir=tmp_path / "other")
    LabState(stale).save()
    before = _routes(mine)
    r = _other(stale.dir, "down", "--wipe")
    assert r.returncode == 0, r.stderr
    assert _routes(mine) == before
    assert f"no unreachable guard for {mine}" in r.stdout and lab.cfg.bridge in r.stdout
    assert _answers(lab)


def test_up_on_a_subnet_in_use_is_refused_and_changes_nothing(guarded: Lab, tmp_path: Path) -> None:
    lab, mine = guarded, str(guarded.cfg.network)
    before = _routes(mine, OTHER_SUBNET, DEFAULT_SUBNET)
    other_dir = tmp_path / "other"
    r = _other(other_dir, "up", "--subnet", mine)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert _routes(mine, OTHER_SUBNET, DEFAULT_SUBNET) == before
    assert not other_dir.exists()  # no keys, no state, no disks
    assert f"lab subnet {mine} overlaps" in r.stderr and "nothing was changed" in r.stderr
    assert _answers(lab)


def test_a_built_lab_is_complete_and_an_interrupted_one_says_so(guarded: Lab) -> None:
    """`lab up` records how far it got; a build stopped before its end (as a SIGINT during the
    learner add leaves it) is called incomplete by `lab status`, and commands that fall back to the
    lab's inventory warn. Here by putting the state file back one stage; the next test sends a real
    SIGINT."""
    lab = guarded
    state = lab.state
    assert state.build is Build.COMPLETE
    r = lab.cli("status")
    assert r.returncode == 0 and "incomplete" not in r.stdout, r.stdout
    try:
        replace(state, build=Build.VOTERS).save()
        r = lab.cli("status")
        assert r.returncode == 1 and f"lab '{lab.cfg.prefix}' is incomplete" in r.stdout, r.stdout
        assert "etcd-dr lab up --resume" in r.stdout
        r = lab.etcd_dr("status")  # no -i: the lab's inventory
        assert r.returncode == 0, r.stderr  # its cluster is healthy ...
        assert f"warning: lab '{lab.cfg.prefix}' is incomplete" in r.stderr  # ... but the lab is not
    finally:
        replace(lab.state, build=Build.COMPLETE).save()


def test_a_real_sigint_during_the_learner_add_leaves_a_lab_that_says_so(guarded: Lab, tmp_path: Path) -> None:
    """The other lab built with `--learner`, interrupted by a real SIGINT once its voters are up
    (the state file says `voters`) while the learner joins: `lab status` calls it incomplete and
    names the fix; nothing of it is left afterwards."""
    import signal
    import time

    lab_dir = tmp_path / "other"
    env = {
        **os.environ,
        "ETCD_DR_LAB_PREFIX": OTHER_PREFIX,
        "ETCD_DR_LAB_SUBNET": OTHER_SUBNET,
        "ETCD_DR_LAB_DIR": str(lab_dir),
    }
    p = subprocess.Popen(
        [sys.executable, "-m", "etcd_dr.cli", "lab", "up", "--learner"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while True:
            try:
                build = json.loads((lab_dir / "lab.json").read_text()).get("build")
            except (OSError, ValueError):
                build = None
            if build == Build.VOTERS:
                break
            assert p.poll() is None and time.monotonic() < end, (build, p.poll())
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)  # our own child, by PID
        out, _ = p.communicate(timeout=60)
        assert p.returncode != 0, out
        r = _other(lab_dir, "status")
        assert r.returncode == 1 and f"lab '{OTHER_PREFIX}' is incomplete" in r.stdout, r.stdout + out
        assert "etcd-dr lab up --resume" in r.stdout
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _other(lab_dir, "down", "--wipe")
    assert _answers(guarded)  # the session's lab never noticed
