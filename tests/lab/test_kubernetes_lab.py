"""Kubernetes on the lab: the cluster as RKE left it, the stand-in rke refusing as RKE refuses (exact
messages) and rejecting a wrong certificate, and the source incident's way back after a
masters-lost recovery: ssl-old, etcd-on-ssl-old, rke-files, rke-up with external etcd (the
survivor), api-check ready with every /registry object back. The stand-in rke first meets the lost
quorum: it really asks etcd to remove a dead member and gets etcd's own timeout."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from etcd_dr.certs import CertKeyPair, issue_cert, new_ca
from etcd_dr.executor import audit_log_for, executor_for
from etcd_dr.inventory import Inventory, load_inventory
from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes import steps as K
from etcd_dr.lab import kube, lifecycle, members
from etcd_dr.lab.standins import rke
from etcd_dr.plans import Plan, Step, StepState, execute
from etcd_dr.runtime import MemberParams
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters

pytestmark = pytest.mark.lab
SSL, SSL_OLD = "/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old"


def on(lab: Lab, host: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lifecycle.ssh_argv(lab.cfg, host, [script]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rke_up(lab: Lab, inv: Inventory, case: str, config: dict, state: bytes | None = None) -> tuple[int, str]:
    """The stand-in `rke up` on node2 in a directory of its own, with this cluster.yml (and the lab's
    state file beside it unless given); its exit code and log."""
    d = f"/opt/rke-test/{case}"
    with executor_for(inv, "node2") as ex:
        ex.run(["mkdir", "-p", d])
        ex.put(yaml.safe_dump(config, sort_keys=False).encode(), f"{d}/cluster.yml", mode=0o600)
        ex.put(state or (lab.cfg.dir / "cluster.rkestate").read_bytes(), f"{d}/cluster.rkestate", mode=0o600)
        r = ex.run(["sh", "-c", f"cd {d} && rke up --config cluster.yml 2>&1"], check=False, timeout=300)
    return r.rc, r.stdout


def fatal(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.startswith("FATA[")]
    assert lines, log
    return lines[-1].split("] ", 1)[1].strip()


def apiservers(lab: Lab) -> dict[str, str]:
    """The kube-apiserver container id on each master (unchanged = nothing was redeployed)."""
    return {
        h: on(lab, h, "docker inspect -f '{{.Id}}' kube-apiserver").stdout.strip()
        for h in ("master1", "master2", "master3")
    }


def rsa_client(lab: Lab) -> CertKeyPair:
    """A client certificate the lab's etcd accepts, with an RSA key as RKE's external etcd wants
    (it type-asserts one; the lab's own etcd-dr client key is P-256), like RKE's kube-node."""
    d = lab.cfg.certs_dir
    ca = CertKeyPair((d / "kube-ca.pem").read_bytes(), (d / "kube-ca-key.pem").read_bytes())
    return issue_cert(ca, "system:node", server=False, rsa_bits=2048, organization="system:nodes")


def no_etcd(config: dict) -> dict:
    for n in config["nodes"]:
        n["role"] = [r for r in n["role"] if r != "etcd"] or ["worker"]
    return config


def external(config: dict, lab: Lab, url: str, cert: bytes, key: bytes) -> dict:
    files = members.client_files(lab.cfg)
    config["services"]["etcd"] = {
        "external_urls": [url],
        "ca_cert": files.ca_cert.read_text(),
        "cert": cert.decode(),
        "key": key.decode(),
        "path": "/registry",
    }
    return config


def test_the_lab_is_left_as_rke_left_it(running_lab: Lab) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    assert inv.rke is not None and inv.rke.deploy_host == "node2"
    assert inv.rke.cluster_yml == lab.cfg.dir / "cluster.yml" and inv.rke.state_path().exists()
    assert inv.rke.kube_config_path().exists()
    state = json.loads(inv.rke.state_path().read_text())
    bundle = state["currentState"]["certificatesBundle"]
    ca = members.client_files(lab.cfg).ca_cert.read_bytes().decode()
    assert bundle["kube-ca"]["certificatePEM"] == ca  # the lab's real kube-ca
    # the member certificate in the state file is the one etcd serves on master1
    host_cert = on(lab, "master1", f"cat {SSL}/kube-etcd-{inv.host('master1').address_dashed}.pem").stdout
    assert bundle[f"kube-etcd-{inv.host('master1').address_dashed}"]["certificatePEM"] == host_cert
    listing = on(lab, "node2", "ls /opt/rke && rke --version").stdout
    assert "cluster.rkestate" in listing and "stand-in" in listing
    with client_for(inv) as c:
        assert apicheck.registry_counts(c) == kube.load_counts(lab.cfg)
    for h in ("master1", "master2", "master3"):
        assert apicheck.readyz(inv.host(h).address, ca.encode()) is None, h


def test_the_standin_refuses_as_rke_does_and_changes_nothing(running_lab: Lab) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    before = apiservers(lab)
    # any RSA PEMs: refused before they are used (an EC key would panic first, as in RKE)
    pair = issue_cert(new_ca(rsa_bits=2048), "x", rsa_bits=2048)
    m3 = inv.client_url(inv.host("master3"))
    node1_only = no_etcd(kube.cluster_yml(lab.cfg))
    node1_only["nodes"][3]["role"] = ["etcd", "worker"]
    cases: dict[str, tuple[dict, str]] = {
        "no-etcd": (no_etcd(kube.cluster_yml(lab.cfg)), rke.NO_ETCD_HOST),
        "both": (external(kube.cluster_yml(lab.cfg), lab, m3, pair.cert_pem, pair.key_pem), rke.BOTH_ETCD),
        "plane-replaced": (node1_only, rke.PLANE_REPLACED),
    }
    for field, message in rke.EXTERNAL_EMPTY.items():
        c = external(no_etcd(kube.cluster_yml(lab.cfg)), lab, m3, pair.cert_pem, pair.key_pem)
        c["services"]["etcd"][field] = ""
        cases[f"empty-{field}"] = (c, message)
    t0 = time.monotonic()
    for case, (config, message) in cases.items():
        rc, log = rke_up(lab, inv, case, config)
        assert rc == 1 and fatal(log) == message, (case, log)
        assert K.classify_rke(log, rc)[0] is not K.RkeFailure.OTHER, case
    # the lab's own etcd-dr client key is P-256: RKE's type assertion panics (Go's words, exit 2)
    files = members.client_files(lab.cfg)
    ec = external(
        no_etcd(kube.cluster_yml(lab.cfg)), lab, m3, files.cert.read_bytes(), files.key.read_bytes()
    )
    rc, log = rke_up(lab, inv, "ec-key", ec)
    assert rc == 2, log
    assert "panic: interface conversion: interface {} is *ecdsa.PrivateKey, not *rsa.PrivateKey" in log
    assert K.classify_rke(log, rc)[0] is K.RkeFailure.CLIENT_KEY_NOT_RSA
    print(f"{len(cases) + 1} refusals in {time.monotonic() - t0:.1f} s")
    assert apiservers(lab) == before  # nothing redeployed


def test_the_standin_rejects_a_wrong_certificate(running_lab: Lab) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    before = apiservers(lab)
    stranger = issue_cert(
        new_ca("not-kube-ca", rsa_bits=2048), "kube-etcd-client", server=False, rsa_bits=2048
    )
    url = inv.client_url(inv.host("master3"))
    rc, log = rke_up(
        lab,
        inv,
        "wrong-cert",
        external(no_etcd(kube.cluster_yml(lab.cfg)), lab, url, stranger.cert_pem, stranger.key_pem),
    )
    assert rc == 1, log
    assert fatal(log).startswith(f"[etcd] Failed to connect to external etcd [{url}]"), log
    assert K.classify_rke(log, rc)[0] is K.RkeFailure.EXTERNAL_REFUSED
    assert apiservers(lab) == before


def test_masters_lost_then_kubernetes_back_on_external_etcd(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    expected = kube.load_counts(lab.cfg)
    m3 = inv.host("master3")
    original = on(lab, "master3", f"cd {SSL} && sha256sum *.pem").stdout
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    r, wall = cli(lab, "recover", "--yes", "--json", timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    print(f"recover: {wall:.1f} s")

    # RKE pointed at the survivor as external etcd, with PEMs it accepts (RSA, signed by kube-ca)
    client = rsa_client(lab)
    config = external(
        no_etcd(kube.cluster_yml(lab.cfg)), lab, inv.client_url(m3), client.cert_pem, client.key_pem
    )
    config["nodes"] = [n for n in config["nodes"] if n["hostname_override"] not in ("master1", "master2")]
    cluster_yml, state = tmp_path / "cluster.yml", tmp_path / "cluster.rkestate"
    cluster_yml.write_text(yaml.safe_dump(config, sort_keys=False))
    state.write_bytes((lab.cfg.dir / "cluster.rkestate").read_bytes())

    def step(sid: str, action: K.KubernetesAction, host: str | None, params) -> Step:
        return Step(sid, action, host, sid, f"{sid} holds", "the source incident's way back", params=params)

    plan = Plan(
        "kubernetes",
        inv.cluster,
        "no etcd node left of the old plane but master3: RKE on external etcd",
        (
            step("ssl-old:master3", K.KubernetesAction.SSL_OLD, "master3", K.SslOldParams(SSL, SSL_OLD)),
            step(
                "etcd-on-ssl-old:master3",
                K.KubernetesAction.ETCD_ON_SSL_OLD,
                "master3",
                K.EtcdOnSslOldParams(
                    **MemberParams.fields_of(inv, m3),
                    cert_dir=SSL,
                    old_dir=SSL_OLD,
                    retired="etcd-before-ssl-old",
                ),
            ),
            step(
                "rke-files",
                K.KubernetesAction.RKE_FILES,
                "node2",
                K.RkeFilesParams(str(cluster_yml), str(state), "/opt/rke"),
            ),
            step("rke-up", K.KubernetesAction.RKE_UP, "node2", K.RkeUpParams("/opt/rke", "rke", 300.0)),
            step(
                "api-check",
                K.KubernetesAction.API_CHECK,
                None,
                K.ApiCheckParams(("master3",), (inv.client_url(m3),), expected, timeout_s=60),
            ),
        ),
    )
    audit = audit_log_for(inv)
    lines: list[str] = []
    c = K.Ctx(inv, audit, lines.append)
    t0 = time.monotonic()
    try:
        out = execute(plan, K.handlers(c), audit=audit, say=lines.append)
    finally:
        c.close()
    took = {r.step.id: round(r.duration_s, 2) for r in out.results}
    print(f"steps in {time.monotonic() - t0:.1f} s: {took}")
    assert out.ok, "\n".join(lines)
    states = {r.step.id: r.state for r in out.results}
    assert all(
        states[s] is StepState.DONE
        for s in ("ssl-old:master3", "etcd-on-ssl-old:master3", "rke-files", "rke-up")
    )
    assert c.ready == {"master3": None} and c.counts == expected  # every /registry object back
    assert any(ln.startswith("rke: INFO") and "External etcd connection string" in ln for ln in lines)

    # etcd reads ssl_old, and keeps serving after rke regenerated /etc/kubernetes/ssl
    args = on(lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' etcd").stdout
    assert f"--cert-file={SSL_OLD}/kube-etcd-{m3.address_dashed}.pem" in args and f"{SSL}/" not in args
    assert on(lab, "master3", f"cd {SSL_OLD} && sha256sum *.pem").stdout == original
    new_ssl = on(lab, "master3", f"cd {SSL} && sha256sum kube-node.pem kube-apiserver.pem").stdout
    assert all(line not in original for line in new_ssl.splitlines())  # regenerated: new keys, same names
    with client_for(inv, [inv.client_url(m3)]) as cl:
        cl.put("/k8sb/after-rke-up", "ok")
        assert cl.range("/k8sb/after-rke-up").count == 1
    apiserver = on(
        lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' kube-apiserver"
    ).stdout
    assert f"--etcd-servers={inv.client_url(m3)}" in apiserver and "--etcd-prefix=/registry" in apiserver
    remote = json.loads(on(lab, "node2", "cat /opt/rke/cluster.rkestate").stdout)
    assert remote["currentState"]["rkeConfig"]["services"]["etcd"]["externalUrls"] == [inv.client_url(m3)]

    # an ssl_old without this step's manifest that etcd reads from is never moved aside
    manifest = f"{SSL_OLD}/{K.MANIFEST}"
    assert on(lab, "master3", f"mv {manifest} /root/manifest.kept").returncode == 0
    c3 = K.Ctx(inv, audit, lambda _m: None)
    try:
        refused = execute(Plan("kubernetes", inv.cluster, "r", plan.steps[:1]), K.handlers(c3), audit=audit)
    finally:
        c3.close()
    assert refused.failed is not None and "etcd runs with its certificates in" in (refused.failed.error or "")
    assert on(lab, "master3", f"ls -d {SSL_OLD}.* 2>/dev/null | wc -l").stdout.strip() == "0"  # nothing moved
    with client_for(inv, [inv.client_url(m3)]) as cl:
        assert cl.range("/k8sb/after-rke-up").count == 1
    assert on(lab, "master3", f"mv /root/manifest.kept {manifest}").returncode == 0

    # a second run of the same plan changes nothing
    c2 = K.Ctx(inv, audit, lambda _m: None)
    try:
        again = execute(plan, K.handlers(c2), audit=audit)
    finally:
        c2.close()
    assert again.ok and all(r.state is StepState.SKIPPED for r in again.results), again.to_json()


def test_rke_up_with_quorum_lost_gets_etcds_own_timeout(running_lab: Lab) -> None:
    """The source incident before the recovery: kubectl and rke up against etcd without quorum."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    ca = members.client_files(lab.cfg).ca_cert.read_bytes()
    m3 = inv.host("master3")
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    # quorum lost: kube-apiserver's reads fail with etcd's own error, as kubectl did
    t0 = time.monotonic()
    said = apicheck.readyz(m3.address, ca, timeout=90)
    print(f"/readyz with quorum lost: {time.monotonic() - t0:.1f} s: {said}")
    assert said is not None and "etcdserver: request timed out" in said
    # ... and so does a list, as `kubectl get pods` did (Error from server: etcdserver: request timed out)
    ctx = ssl.create_default_context(cadata=ca.decode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"https://{m3.address}:6443/api/v1/pods", timeout=90, context=ctx)
    assert json.loads(e.value.read())["message"] == "etcdserver: request timed out"

    # rke up keeping master2 and master3 as etcd: the stand-in asks the real etcd to remove master1
    survivors = kube.cluster_yml(lab.cfg)
    survivors["nodes"] = [n for n in survivors["nodes"] if n["hostname_override"] != "master1"]
    t0 = time.monotonic()
    rc, log = rke_up(lab, inv, "quorum-lost", survivors)
    print(f"rke up with quorum lost: {time.monotonic() - t0:.1f} s")
    assert rc == 1, log
    # through etcd's v3 API the removal ends at its deadline; the health check gets etcd's own words
    assert "Failed to delete etcd member [etcd-master1] from etcd cluster: context deadline exceeded" in log
    assert f"[etcd] host [{m3.address}] failed to report healthy: etcdserver: request timed out" in log
    assert K.classify_rke(log, rc)[0] is K.RkeFailure.QUORUM_LOST


def test_masters_lost_then_rke_up_keeps_the_survivor_as_etcd_node(running_lab: Lab, tmp_path: Path) -> None:
    """The other way back: the recovered member is in the old plane, so RKE keeps it as its etcd node
    (the lost masters removed from cluster.yml); rke finds their members already gone."""
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    expected = kube.load_counts(lab.cfg)
    m3 = inv.host("master3")
    for h in ("master1", "master2"):
        assert lab.cli("power", h, "off").returncode == 0
    r, _wall = cli(lab, "recover", "--yes", "--json", timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    config = kube.cluster_yml(lab.cfg)
    config["nodes"] = [n for n in config["nodes"] if n["hostname_override"] not in ("master1", "master2")]
    cluster_yml, state = tmp_path / "cluster.yml", tmp_path / "cluster.rkestate"
    cluster_yml.write_text(yaml.safe_dump(config, sort_keys=False))
    state.write_bytes((lab.cfg.dir / "cluster.rkestate").read_bytes())
    plan = Plan(
        "kubernetes",
        inv.cluster,
        "master3 survived in the old etcd plane: RKE keeps it as its etcd node",
        (
            Step(
                "ssl-old:master3",
                K.KubernetesAction.SSL_OLD,
                "master3",
                "d",
                "p",
                "r",
                params=K.SslOldParams(SSL, SSL_OLD),
            ),
            Step(
                "etcd-on-ssl-old:master3",
                K.KubernetesAction.ETCD_ON_SSL_OLD,
                "master3",
                "d",
                "p",
                "r",
                params=K.EtcdOnSslOldParams(
                    **MemberParams.fields_of(inv, m3),
                    cert_dir=SSL,
                    old_dir=SSL_OLD,
                    retired="etcd-before-ssl-old",
                ),
            ),
            Step(
                "rke-files",
                K.KubernetesAction.RKE_FILES,
                "node2",
                "d",
                "p",
                "r",
                params=K.RkeFilesParams(str(cluster_yml), str(state), "/opt/rke"),
            ),
            Step(
                "rke-up",
                K.KubernetesAction.RKE_UP,
                "node2",
                "d",
                "p",
                "r",
                params=K.RkeUpParams("/opt/rke", "rke", 300.0),
            ),
            Step(
                "api-check",
                K.KubernetesAction.API_CHECK,
                None,
                "d",
                "p",
                "r",
                params=K.ApiCheckParams(("master3",), (inv.client_url(m3),), expected, timeout_s=60),
            ),
        ),
    )
    lines: list[str] = []
    c = K.Ctx(inv, audit_log_for(inv), lines.append)
    t0 = time.monotonic()
    try:
        out = execute(plan, K.handlers(c), audit=c.audit, say=lines.append)
    finally:
        c.close()
    print(
        f"internal path, steps in {time.monotonic() - t0:.1f} s: "
        + str({r.step.id: round(r.duration_s, 2) for r in out.results})
    )
    assert out.ok, "\n".join(lines)
    assert c.ready == {"master3": None} and c.counts == expected
    assert any("[etcd-master1] is not a member of the etcd cluster" in ln for ln in lines)
    apiserver = on(
        lab, "master3", "docker inspect -f '{{range .Args}}{{println .}}{{end}}' kube-apiserver"
    ).stdout
    assert f"--etcd-servers=https://{m3.address}:2379" in apiserver
    assert f"--etcd-certfile={SSL}/kube-node.pem" in apiserver


def test_rke_up_outliving_its_timeout_is_stopped_and_named(running_lab: Lab) -> None:
    lab = running_lab
    inv = load_inventory(lab.cfg.inventory_path)
    step = Step(
        "rke-up",
        K.KubernetesAction.RKE_UP,
        "node2",
        "rke up",
        "p",
        "r",
        params=K.RkeUpParams("/opt/rke", "rke", 1.5),
    )
    lines: list[str] = []
    c = K.Ctx(inv, audit_log_for(inv), lines.append)
    try:
        out = execute(Plan("kubernetes", inv.cluster, "r", (step,)), K.handlers(c), audit=c.audit)
    finally:
        c.close()
    assert not out.ok and out.failed is not None
    assert "(timeout)" in (out.failed.error or "") and "rke.up_timeout (1.5 s)" in (out.failed.error or "")
    assert any(ln.startswith("rke: INFO[0000] Running RKE version") for ln in lines)  # streamed as it came
    time.sleep(1.5)
    assert on(lab, "node2", "pgrep -f 'standins/[r]ke.py' || true").stdout.strip() == ""  # killed on the host
