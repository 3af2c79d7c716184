"""The new cluster.yml (etcd_dr.kubernetes.clusteryml) and `etcd-dr kubernetes plan|cluster-yml`, on
RKE fixtures, with the cluster's picture built by assess() (observe faked)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from test_kubernetes_plan import client_pem, imported, picture

from etcd_dr.cli import main
from etcd_dr.errors import InputError
from etcd_dr.inventory import load_inventory
from etcd_dr.kubernetes import decide as decide_mod
from etcd_dr.kubernetes.clusteryml import KEY_PLACEHOLDER, recovered_path, render, write_recovered
from etcd_dr.kubernetes.importer import import_rke
from etcd_dr.kubernetes.plan import Decision, plan_kubernetes
from etcd_dr.kubernetes.rkefiles import read_cluster_yml, read_state_file

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rke"
YML = FIX / "three-masters/cluster.yml"


def test_surviving_plane_keeps_every_other_byte(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    d = plan_kubernetes(picture(inv, members=["master3"], up=["master3"], leader="master3"), inv, cfg, cur)
    old = YML.read_text()
    r = render(old, cfg, d)
    # the two lost masters' blocks are gone, nothing else: every comment stays
    removed = [ln for ln in r.diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    assert removed == [
        "-  - address: 10.231.0.11  # site A",
        "-    hostname_override: master1",
        "-    user: root",
        "-    role: [controlplane, etcd]",
        "-  - address: 10.231.0.12  # site A",
        "-    hostname_override: master2",
        "-    user: root",
        "-    role: [controlplane, etcd]",
    ]
    assert not [ln for ln in r.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert "# managed by the platform team: keep the comments" in r.text
    assert "    service_cluster_ip_range: 10.43.0.0/16  # the Service range" in r.text


def test_external_etcd_text_has_the_key_and_the_diff_does_not(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    pem = client_pem()
    d = plan_kubernetes(
        picture(inv, members=["node1"], up=["node1"], leader="node1"), inv, cfg, cur, client=pem
    )
    r = render(YML.read_text(), cfg, d)
    assert pem.key.strip().splitlines()[1] in r.text
    assert "PRIVATE KEY" not in r.diff and KEY_PLACEHOLDER in r.diff
    new = yaml.safe_load(r.text)
    etcd = new["services"]["etcd"]
    assert etcd["external_urls"] == ["https://10.231.0.21:2379"] and etcd["path"] == "/registry"
    assert etcd["extra_args"] == {"heartbeat-interval": 500, "election-timeout": 5000}  # kept
    assert [n["role"] for n in new["nodes"]][:3] == [["controlplane"]] * 3
    assert "    role: [controlplane]\n" in r.text  # flow lists stay flow
    # what RKE reads back: no etcd node, external etcd complete
    again = read_cluster_yml(_write(tmp_path / "again.yml", r.text))
    assert not again.etcd_nodes and again.etcd.key.strip() == pem.key.strip()


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_block_lists_and_quotes_stay_as_written(tmp_path: Path) -> None:
    text = YML.read_text().replace(
        "role: [controlplane, etcd]", "role:\n      - controlplane\n      - 'etcd'"
    )
    cfg = read_cluster_yml(_write(tmp_path / "cluster.yml", text))
    inv, _, cur = imported("three-masters", tmp_path, learner="node1")
    d = plan_kubernetes(
        picture(inv, members=["node1"], up=["node1"], leader="node1"), inv, cfg, cur, client=client_pem()
    )
    r = render(text, cfg, d)
    assert "    role:\n      - controlplane\n  - address: 10.231.0.12" in r.text


def test_a_refused_decision_writes_nothing(tmp_path: Path) -> None:
    inv, cfg, cur = imported("three-masters", tmp_path)
    st = picture(inv, members=["master1", "master2", "master3"], up=["master3"], leader=None)
    d = plan_kubernetes(st, inv, cfg, cur)
    assert d.decision is Decision.REFUSED
    with pytest.raises(InputError, match=r"no cluster\.yml to write: quorum lost"):
        render(YML.read_text(), cfg, d)


def test_write_recovered_puts_what_rke_up_reads_beside_it(tmp_path: Path) -> None:
    src = tmp_path / "rke"
    shutil.copytree(FIX / "three-masters", src)
    (src / "kube_config_cluster.yml").write_text("apiVersion: v1\n")
    yml = src / "cluster.yml"
    before = yml.read_bytes()
    inv, cfg, cur = imported("three-masters", tmp_path, learner="node1")
    st = picture(inv, members=["node1"], up=["node1"], leader="node1")
    d = plan_kubernetes(st, inv, cfg, cur, client=client_pem())
    w = write_recovered(yml, yml.with_suffix(".rkestate"), src / "kube_config_cluster.yml", cfg, d)
    assert (w.cluster_yml, w.state_file) == (
        src / "cluster.recovered.yml",
        src / "cluster.recovered.rkestate",
    )
    assert w.kube_config == src / "kube_config_cluster.recovered.yml"
    assert yml.read_bytes() == before  # the operator's file untouched
    assert stat.S_IMODE(w.cluster_yml.stat().st_mode) == 0o600  # a key inside
    state = read_state_file(w.state_file)
    assert state.current.rke_config is not None and not state.current.rke_config.etcd_nodes
    assert read_state_file(yml.with_suffix(".rkestate")).current.rke_config.etcd_nodes  # type: ignore[union-attr]
    # again: the same bytes are left alone; different ones are moved aside, never deleted
    assert write_recovered(yml, yml.with_suffix(".rkestate"), None, cfg, d).moved_aside == ()
    w.cluster_yml.write_text("edited\n")
    again = write_recovered(yml, yml.with_suffix(".rkestate"), None, cfg, d)
    assert [p.name.split(".bak-")[0] for p in again.moved_aside] == ["cluster.recovered.yml"]
    assert again.moved_aside[0].read_text() == "edited\n"
    assert recovered_path(Path("/x/prod.yaml")) == Path("/x/prod.recovered.yaml")


def cli_inventory(tmp_path: Path) -> Path:
    d = tmp_path / "rke"
    shutil.copytree(FIX / "three-masters", d)
    (tmp_path / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "known_hosts").write_text("")
    yml = d / "cluster.yml"
    yml.write_text(yml.read_text().replace("~/.ssh/id_rsa", str(tmp_path / "id_rsa")))
    return import_rke(yml, known_hosts=tmp_path / "known_hosts").inventory


def test_cli_plan_and_cluster_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_path = cli_inventory(tmp_path)
    inv = load_inventory(inv_path)
    pictures = {"st": picture(inv, members=["master3"], up=["master3"], leader="master3")}
    monkeypatch.setattr(decide_mod, "observe", lambda inv, **kw: pictures["st"])
    from test_kubernetes_clockgate import fake_clocks  # it imports this module

    fake_clocks(monkeypatch)
    assert main(["kubernetes", "plan", "-i", str(inv_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["decision"] == "surviving-plane" and got["recovered"] == ["master3"]
    assert main(["kubernetes", "cluster-yml", "-i", str(inv_path)]) == 0
    out = capsys.readouterr().out
    assert "-    hostname_override: master1" in out and "next: rke up --config cluster.recovered.yml" in out
    assert (tmp_path / "rke/cluster.recovered.yml").exists()
    # quorum lost: refused (exit 1) with RKE's error, nothing written
    pictures["st"] = picture(inv, members=["master1", "master2", "master3"], up=["master3"], leader=None)
    assert main(["kubernetes", "cluster-yml", "-i", str(inv_path), "-o", str(tmp_path / "x.yml")]) == 1
    out = capsys.readouterr().out
    assert "rke up would end in: etcdserver: request timed out" in out and "nothing written" in out
    assert not (tmp_path / "x.yml").exists()
