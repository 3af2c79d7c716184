"""The lab's inventory: the same YAML format as any cluster's (etcd_dr.inventory), written by
`lab up` to <labdir>/inventory.yaml; every other command uses it when no inventory is given."""

from __future__ import annotations

from pathlib import Path

import yaml

from etcd_dr.inventory import (
    ClientTLS,
    EtcdSettings,
    Host,
    Inventory,
    PowerDriver,
    PowerSettings,
    RkeSettings,
    Role,
    RuntimeKind,
    SshSettings,
)
from etcd_dr.lab.config import HOSTS, LabConfig

# RKE's files in the lab (etcd_dr.lab.kube writes them; kept here so the inventory needs no import of it)
CLUSTER_YML = "cluster.yml"
DEPLOY_HOST = "node2"  # the source incident's new deploy machine
RKE_REMOTE_DIR = "/opt/rke"


def _host_dict(cfg: LabConfig, name: str, learner_runs: str | None) -> dict:
    d: dict[str, object] = {
        "name": name,
        "address": cfg.address(name),
        "roles": [r.value for r in Role if r in cfg.roles(name)],
    }
    if Role.ETCD_LEARNER in cfg.roles(name) and learner_runs:
        d["etcd_image" if cfg.runtime == RuntimeKind.DOCKER else "etcd_binary"] = learner_runs
    return d


def inventory_dict(
    cfg: LabConfig, *, image: str | None, binary: str, learner_runs: str | None = None
) -> dict:
    """learner_runs: the image (docker) or binary (process) of node1's learner, when the lab has one."""
    etcd: dict[str, object] = {
        "runtime": cfg.runtime.value,
        "container": "etcd",
        "data_dir": "/var/lib/etcd",  # on the host (the container sees it at /var/lib/rancher/etcd)
        "client_port": 2379,
        "peer_port": 2380,
        "heartbeat_interval": 500,  # RKE's
        "election_timeout": 5000,
        "cert_dir": "/etc/kubernetes/ssl",
        "client": {
            "ca_cert": "certs/kube-ca.pem",
            "cert": "certs/kube-etcd-client.pem",
            "key": "certs/kube-etcd-client-key.pem",
        },
        "dial_timeout": 2,
        "request_timeout": 5,
    }
    if cfg.runtime == RuntimeKind.DOCKER:
        etcd["image"] = image
    else:
        etcd["binary"] = binary
    return {
        "cluster": f"lab-{cfg.prefix}",
        "rehearsal": True,  # a lab: fault injection allowed
        "audit_log": "audit.jsonl",
        "ssh": {
            "user": "root",
            "port": 22,
            "key_file": "keys/id_ed25519",
            "known_hosts": "keys/known_hosts",
            "connect_timeout": 3,
            "command_timeout": 60,
            "keepalive": 5,
            "sudo": False,
        },
        "etcd": etcd,
        # the lab's power state is fencing evidence: a host `etcd-dr lab power H off` took down is off
        "power": {"driver": "lab", "dir": "."},
        # RKE's files as `lab up` leaves them (etcd_dr.lab.kube); `rke up` runs on node2 (the
        # stand-in rke), as on the source incident's new deploy machine
        "rke": {"cluster_yml": CLUSTER_YML, "deploy_host": DEPLOY_HOST, "remote_dir": RKE_REMOTE_DIR},
        "hosts": [_host_dict(cfg, h.name, learner_runs) for h in HOSTS],
    }


def write_inventory(
    cfg: LabConfig, *, image: str | None, binary: str, learner_runs: str | None = None
) -> Path:
    text = (
        f"# etcd-dr lab inventory (prefix {cfg.prefix}, subnet {cfg.subnet}), written by `etcd-dr lab up`.\n"
        "# Paths are relative to this file's directory.\n"
        + yaml.safe_dump(
            inventory_dict(cfg, image=image, binary=binary, learner_runs=learner_runs),
            sort_keys=False,
            default_flow_style=None,
        )
    )
    tmp = cfg.inventory_path.with_suffix(".part")
    tmp.write_text(text)
    tmp.replace(cfg.inventory_path)
    return cfg.inventory_path


def lab_inventory(
    cfg: LabConfig, *, image: str | None, binary: str, learner_runs: str | None = None
) -> Inventory:
    """The same inventory as an object (without going through the YAML loader)."""
    files = cfg.certs_dir

    def host(name: str) -> Host:
        roles = cfg.roles(name)
        extra = {}
        if Role.ETCD_LEARNER in roles and learner_runs:
            extra = {"etcd_image" if cfg.runtime == RuntimeKind.DOCKER else "etcd_binary": learner_runs}
        return Host(name, cfg.address(name), roles, **extra)

    return Inventory(
        cluster=f"lab-{cfg.prefix}",
        hosts=tuple(host(h.name) for h in HOSTS),
        etcd=EtcdSettings(
            runtime=cfg.runtime,
            client=ClientTLS(
                files / "kube-ca.pem", files / "kube-etcd-client.pem", files / "kube-etcd-client-key.pem"
            ),
            image=image if cfg.runtime == RuntimeKind.DOCKER else None,
            binary=binary,
        ),
        ssh=SshSettings(key_file=cfg.keys_dir / "id_ed25519", known_hosts=cfg.keys_dir / "known_hosts"),
        rehearsal=True,
        audit_log=cfg.dir / "audit.jsonl",
        power=PowerSettings(PowerDriver.LAB, dir=cfg.dir),
        rke=RkeSettings(
            cluster_yml=cfg.dir / CLUSTER_YML, deploy_host=DEPLOY_HOST, remote_dir=RKE_REMOTE_DIR
        ),
        source=cfg.inventory_path,
    )
