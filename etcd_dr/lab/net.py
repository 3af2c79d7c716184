"""The lab's wires: a bridge in the root namespace (gateway .1), one network namespace per host,
connected by a veth pair (root side `v<prefix><tag>`, host side `eth0`). Unplug = root-side link down.

Everything is named from the lab's prefix; delete functions touch only those names. Routes: only the
lab's own subnet (from its state file, else the one asked for), and only a route that is the lab's own
(its bridge's, or the `unreachable` guard); another interface's route is never replaced."""

from __future__ import annotations

import enum
import ipaddress
import json
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.lab.config import HOSTS, LabConfig, LabState, env_lab_dir

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


def running_lab() -> LabState | None:
    """The lab the environment names (ETCD_DR_LAB_DIR / ETCD_DR_LAB_PREFIX), if it is up. Here, not
    in lifecycle: a command that only looks for the lab's inventory imports this much and no more."""
    state = LabState.load(env_lab_dir())
    return state if state is not None and link_exists(state.config.bridge) else None


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


class RouteUse(enum.StrEnum):
    """Who routes a lab's subnet on this machine (the main table), as far as the lab may act on it."""

    FREE = "free"  # no route for it: the lab may route it (bridge or guard)
    GUARD = "guard"  # `unreachable <subnet>`: the guard a lab that is down leaves
    OWN = "own"  # over one of this lab's bridges: the lab is up
    FOREIGN = "foreign"  # another interface's or someone else's route: never touched


@dataclass(frozen=True)
class SubnetRoutes:
    use: RouteUse
    reason: str  # one sentence


def _route_text(r: Mapping[str, Any]) -> str:
    """A route of `ip -j route` as `ip route` prints it (the fields that tell whose it is)."""
    words = [r["type"]] if r.get("type") not in (None, "unicast") else []
    words.append(str(r.get("dst")))
    for key, word in (("gateway", "via"), ("dev", "dev"), ("protocol", "proto")):
        if r.get(key):
            words += [word, str(r[key])]
    return " ".join(words)


def classify_routes(
    routes: Sequence[Mapping[str, Any]], subnet: ipaddress.IPv4Network, own_devs: Collection[str]
) -> SubnetRoutes:
    """Pure: what the routes (`ip -4 -j route show`) say about the lab's subnet. A broader route (the
    default, a VPN's 10/8) is no conflict: the lab's own routes are more specific and win. A broader
    *connected* route is: another interface holds addresses of the subnet."""
    use, why = RouteUse.FREE, f"no route for {subnet} on this machine"
    for r in routes:
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if not net.overlaps(subnet):
            continue
        text = f"`{_route_text(r)}`"
        if r.get("dev") in own_devs:
            if use is not RouteUse.FOREIGN:
                use, why = RouteUse.OWN, f"{subnet} is routed over this lab's bridge ({text})"
        elif r.get("type") == "unreachable" and net == subnet:
            if use is RouteUse.FREE:
                use, why = RouteUse.GUARD, f"{subnet} has the guard a lab that is down leaves ({text})"
        elif net.prefixlen < subnet.prefixlen and r.get("protocol") != "kernel":
            continue
        else:
            return SubnetRoutes(RouteUse.FOREIGN, f"{subnet} is in use on this machine: route {text}")
    return SubnetRoutes(use, why)


def subnet_routes(cfg: LabConfig, own_bridges: Collection[str] = ()) -> SubnetRoutes:
    out = ip("-4", "-j", "route", "show", "table", "main").stdout
    return classify_routes(json.loads(out or "[]"), cfg.network, {cfg.bridge, *own_bridges})


def check_subnet_free(cfg: LabConfig, own_bridges: Collection[str] = ()) -> None:
    """Refuse a subnet that another interface (not this lab's bridge) or another route already uses:
    routing to the lab would break it or be broken by it. Only reads: a refusal changes nothing."""
    own = {cfg.bridge, *own_bridges}
    out = ip("-j", "-4", "addr", "show").stdout
    net = cfg.network
    for link in json.loads(out or "[]"):
        if link.get("ifname") in own:
            continue
        for a in link.get("addr_info", []):
            other = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if other.overlaps(net):
                raise InputError(
                    f"lab subnet {net} overlaps {other} on interface {link['ifname']}: "
                    "choose another --subnet (nothing was changed)"
                )
    routes = subnet_routes(cfg, own)
    if routes.use is RouteUse.FOREIGN:
        raise InputError(f"lab subnet {net}: {routes.reason}; choose another --subnet (nothing was changed)")


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


def down(cfg: LabConfig, hosts: Sequence[str] | None = None) -> str | None:
    """Remove veths, namespaces and the bridge (idempotent). Processes inside a namespace keep it
    alive after `ip netns del` (only the name goes): stop the hosts first. Returns why the subnet's
    guard route was not installed, if it was not."""
    names = hosts or [h.name for h in HOSTS]
    for h in names:
        if link_exists(cfg.veth(h)):
            ip("link", "del", cfg.veth(h), check=False)
        if netns_exists(cfg.netns(h)):
            ip("netns", "del", cfg.netns(h), check=False)
    if hosts is None:
        if link_exists(cfg.bridge):
            ip("link", "del", cfg.bridge, check=False)
        return guard(cfg)
    return None


def guard(cfg: LabConfig) -> str | None:
    """Make the lab's subnet unreachable while the lab is down. Without the bridge, packets for a lab
    address (a status run against a lab that is down, a stale etcdctl endpoint) would follow the
    default route off this machine; the lab's traffic must stay on it. Kept until `up` removes it.

    Only on a subnet nobody else routes: `add`, never `replace` (which would swap out another
    interface's connected route and cut that network off). Returns why it was not installed."""
    routes = subnet_routes(cfg)
    if routes.use is RouteUse.GUARD:
        return None
    if routes.use is not RouteUse.FREE:
        return f"no unreachable guard for {cfg.network}: {routes.reason}; its routes were left alone"
    r = ip("route", "add", "unreachable", str(cfg.network), check=False)
    if r.returncode != 0:  # a route appeared since the look: it is someone else's
        return f"no unreachable guard for {cfg.network}: `ip route add` said {r.stderr.strip()!r}"
    return None


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
