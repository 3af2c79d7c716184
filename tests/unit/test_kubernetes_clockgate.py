"""The Kubernetes decision's clock gate: the same measurement as `etcd-dr hosts clock`, on the hosts
the way back uses, refusing before `rke up` with the fix (a skewed clock: sync; a certificate dated
ahead on a right clock: renew it); and decide() wired to it, observe and the measurement faked."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from test_kubernetes_cluster_yml import cli_inventory
from test_kubernetes_plan import picture

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.cli import main
from etcd_dr.hostcare import ClockSample
from etcd_dr.hostrepair.clock import ClockReport, assess
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.kubernetes import clockgate
from etcd_dr.kubernetes import decide as decide_mod
from etcd_dr.kubernetes.plan import Decision, KubernetesDecision

NOW = dt.datetime.now(dt.UTC)
CA = new_ca()


def report(inv: Inventory, offsets: dict[str, float], certs: dict[str, dict[str, bytes]] | None = None):
    """What `hosts clock` would judge: these hosts measured at these offsets from this machine."""
    clocks = {h: ClockSample(h, off, 0.002, NOW.timestamp()) for h, off in offsets.items()}
    return assess(inv, clocks, {h: (certs or {}).get(h, {}) for h in offsets}, now=NOW, only=offsets)


def fake_clocks(monkeypatch: pytest.MonkeyPatch, offsets: dict[str, float] | None = None, certs=None) -> list:
    """decide()'s measurement faked; the hosts it was asked for are recorded."""
    asked: list[tuple[str, ...]] = []

    def measure(inv: Inventory, hosts: tuple[str, ...]) -> ClockReport:
        asked.append(hosts)
        return report(inv, {h: (offsets or {}).get(h, 0.0) for h in hosts}, certs)

    monkeypatch.setattr(decide_mod, "measure_clocks", measure)
    return asked


def ok_decision() -> KubernetesDecision:
    return KubernetesDecision(Decision.SURVIVING_PLANE, "etcd is RKE's plane", ("master3",), ("10.0.0.3",))


def test_the_decision_stands_when_the_hosts_clocks_and_certificates_hold(tmp_path: Path) -> None:
    inv = load_inventory(cli_inventory(tmp_path))
    d = ok_decision()
    assert clockgate.gate(d, report(inv, {"master3": 0.3, "node2": -0.4}), ("master3", "node2")) is d


def test_a_skewed_deploy_host_refuses_with_the_sync(tmp_path: Path) -> None:
    inv = load_inventory(cli_inventory(tmp_path))
    rep = report(inv, {"master3": 0.0, "node2": 7200.0})
    got = clockgate.gate(ok_decision(), rep, ("master3", "node2"))
    assert got.decision is Decision.REFUSED and not got.ok
    assert got.reason.startswith("node2's clock is 7200.000 s ahead of this machine")
    assert "x509: certificate has expired or is not yet valid" in got.reason
    assert got.fix == clockgate.SYNC_FIX
    # a host the way back does not use is not a reason
    assert clockgate.gate(ok_decision(), rep, ("master3",)).ok


def test_a_certificate_dated_ahead_on_a_right_clock_refuses_with_the_renewal(tmp_path: Path) -> None:
    inv = load_inventory(cli_inventory(tmp_path))
    h = inv.host("master3")
    ahead = issue_cert(CA, "kube-etcd", ips=[h.address], not_before=NOW + dt.timedelta(hours=8)).cert_pem
    rep = report(inv, {"master3": 0.0}, {"master3": {str(inv.etcd.cert_path(h)): ahead}})
    got = clockgate.gate(ok_decision(), rep, ("master3",))
    assert got.decision is Decision.REFUSED
    assert "x509: certificate has expired or is not yet valid: current time" in got.reason
    assert "etcd-dr cert renew --host master3" in got.fix and clockgate.SYNC_FIX not in got.fix


def test_an_unmeasured_host_is_no_reason_and_a_refusal_is_left_alone(tmp_path: Path) -> None:
    inv = load_inventory(cli_inventory(tmp_path))
    assert clockgate.gate(ok_decision(), report(inv, {}), ("master3", "node2")).ok
    refused = KubernetesDecision(Decision.REFUSED, "quorum lost", (), (), fix="recover etcd first")
    assert clockgate.gate(refused, report(inv, {"node2": 7200.0}), ("node2",)) is refused


def test_the_plan_measures_the_recovered_members_and_the_deploy_host_and_refuses_on_skew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_path = cli_inventory(tmp_path)
    inv = load_inventory(inv_path)
    st = picture(inv, members=["master3"], up=["master3"], leader="master3")
    monkeypatch.setattr(decide_mod, "observe", lambda inv, **kw: st)
    asked = fake_clocks(monkeypatch)
    assert main(["kubernetes", "plan", "-i", str(inv_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert asked == [("master3", inv.rke.deploy_host)] and got["clocks"]["ok"]
    asked = fake_clocks(monkeypatch, {inv.rke.deploy_host: -3600.0})
    assert main(["kubernetes", "plan", "-i", str(inv_path), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["decision"] == "refused" and got["fix"] == clockgate.SYNC_FIX
    assert f"{inv.rke.deploy_host}'s clock is 3600.000 s behind this machine" in got["reason"]
