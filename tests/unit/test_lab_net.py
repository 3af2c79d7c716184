"""Whose route is the lab's subnet: the pure classification behind `lab up`'s refusal and the guard
`lab down` installs (routes as `ip -4 -j route show` prints them, copied from this machine)."""

from __future__ import annotations

import ipaddress

import pytest

from etcd_dr.lab.net import RouteUse, classify_routes

SUBNET = ipaddress.IPv4Network("10.231.101.0/24")
DEFAULT = {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []}
ETH0 = {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "flags": []}


def connected(dst: str, dev: str) -> dict[str, object]:
    return {"dst": dst, "dev": dev, "protocol": "kernel", "scope": "link", "prefsrc": "x", "flags": []}


def unreachable(dst: str) -> dict[str, object]:
    return {"type": "unreachable", "dst": dst, "flags": []}


@pytest.mark.parametrize(
    ("routes", "use", "words"),
    [
        ([DEFAULT, ETH0], RouteUse.FREE, "no route for 10.231.101.0/24"),
        ([DEFAULT, unreachable("10.231.112.0/24")], RouteUse.FREE, "no route"),  # another lab's guard
        ([DEFAULT, unreachable("10.231.101.0/24")], RouteUse.GUARD, "guard"),
        ([connected("10.231.101.0/24", "honebr0")], RouteUse.OWN, "this lab's bridge"),
        # the bug: another lab's (or interface's) connected route, which `replace` swapped out
        (
            [DEFAULT, connected("10.231.101.0/24", "honebbr0")],
            RouteUse.FOREIGN,
            "route `10.231.101.0/24 dev honebbr0 proto kernel`",
        ),
        ([{"dst": "10.231.101.128/25", "gateway": "192.0.2.9", "dev": "eth0"}], RouteUse.FOREIGN, "via"),
        ([{"dst": "10.231.101.7", "dev": "tun0", "scope": "link"}], RouteUse.FOREIGN, "10.231.101.7"),
        ([connected("10.231.0.0/16", "eth1")], RouteUse.FOREIGN, "eth1"),  # addresses of ours there
        # broader routes that are not connected: the lab's more specific routes win, no conflict
        ([{"dst": "10.0.0.0/8", "gateway": "192.0.2.7", "dev": "eth0"}], RouteUse.FREE, "no route"),
        ([unreachable("10.231.0.0/16")], RouteUse.FREE, "no route"),
        # a foreign route outweighs our own guard or bridge, whatever the order
        ([unreachable("10.231.101.0/24"), connected("10.231.101.0/26", "x0")], RouteUse.FOREIGN, "x0"),
    ],
)
def test_classify_routes(routes: list[dict[str, object]], use: RouteUse, words: str) -> None:
    got = classify_routes(routes, SUBNET, {"honebr0"})
    assert got.use is use, got.reason
    assert words in got.reason
