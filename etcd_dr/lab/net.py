"""The lab's wires: a bridge in the root namespace (gateway .1), one network namespace per host,
connected by a veth pair (root side `v<prefix><tag>`, host side `eth0`). Unplug = root-side link down.

Everything is named from the lab's prefix; delete functions touch only those names."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.lab.config import HOSTS, LabConfig

NETNS_DIR = Path("/run/netns")


class LabNetError(EtcdDrError):
    """An `ip` command for the lab's network failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and p.returncode != 0:
        raise LabNetError(f"`ip {' '.join(args)}` exited {p.returncode}: {p.stderr.strip()}")
    return p


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def check_subnet_free(cfg: LabConfig) -> None:
    """Refuse a subnet that another interface (not this lab's bridge) already uses: routing to the
    lab would break it or be broken by it."""
    out = ip("-j", "-4", "addr", "show").stdout
    net = cfg.network
    for link in json.loads(out or "[]"):
        if link.get("ifname") == cfg.bridge:
            continue
        for a in link.get("addr_info", []):
            other = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if other.overlaps(net):
                raise InputError(
                    f"lab subnet {net} overlaps {other} on interface {link['ifname']}: "
                    "choose another --subnet"
                )


def up(cfg: LabConfig) -> None:
    """Create bridge, namespaces and veths (after `down` removed any leftovers)."""
    check_subnet_free(cfg)
    plen = cfg.network.prefixlen
    ip("route", "del", "unreachable", str(cfg.network), check=False)  # the guard `down` leaves
    ip("link", "add", cfg.bridge, "type", "bridge")
    ip("addr", "add", f"{cfg.gateway}/{plen}", "dev", cfg.bridge)
    ip("link", "set", cfg.bridge, "up")
    for h in HOSTS:
        ns, veth = cfg.netns(h.name), cfg.veth(h.name)
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", cfg.bridge, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{cfg.address(h.name)}/{plen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        # no default route: a lab host reaches its own subnet and nothing beyond


def down(cfg: LabConfig, hosts: Sequence[str] | None = None) -> None:
    """Remove veths, namespaces and the bridge (idempotent). Processes inside a namespace keep it
    alive after `ip netns del` (only the name goes): stop the hosts first."""
    names = hosts or [h.name for h in HOSTS]
    for h in names:
        if link_exists(cfg.veth(h)):
            ip("link", "del", cfg.veth(h), check=False)
        if netns_exists(cfg.netns(h)):
            ip("netns", "del", cfg.netns(h), check=False)
    if hosts is None:
        if link_exists(cfg.bridge):
            ip("link", "del", cfg.bridge, check=False)
        guard(cfg)


def guard(cfg: LabConfig) -> None:
    """Make the lab's subnet unreachable while the lab is down. Without the bridge, packets for a lab
    address (a status run against a lab that is down, a stale etcdctl endpoint) would follow the
    default route off this machine; the lab's traffic must stay on it. Kept until `up` replaces it."""
    ip("route", "replace", "unreachable", str(cfg.network))


def set_link(cfg: LabConfig, host: str, up: bool) -> None:
    """Plug (up) or unplug (down) the host's cable: the root-side end of its veth."""
    ip("link", "set", cfg.veth(host), "up" if up else "down")


def link_is_up(cfg: LabConfig, host: str) -> bool | None:
    """None when the veth does not exist."""
    try:
        flags = Path("/sys/class/net", cfg.veth(host), "flags").read_text()
    except FileNotFoundError:
        return None
    return bool(int(flags, 16) & 0x1)  # IFF_UP
