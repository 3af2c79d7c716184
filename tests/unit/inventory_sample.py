"""A valid inventory and the files it names, shared by the inventory tests."""

from __future__ import annotations

from pathlib import Path

VALID = """\
cluster: lab
rehearsal: true
audit_log: audit.jsonl
ssh:
  user: root
  port: 22
  key_file: keys/id_ed25519
  known_hosts: keys/known_hosts
  connect_timeout: 3
  command_timeout: 60
  keepalive: 5
  sudo: false
etcd:
  runtime: docker
  container: etcd
  image: lab/etcd:3.4.23
  data_dir: /var/lib/etcd
  client_port: 2379
  peer_port: 2380
  heartbeat_interval: 500
  election_timeout: 5000
  cert_dir: /etc/kubernetes/ssl
  client:
    ca_cert: certs/kube-ca.pem
    cert: certs/kube-etcd-client.pem
    key: certs/kube-etcd-client-key.pem
  dial_timeout: 2
  request_timeout: 5
hosts:
  - name: master1
    address: 10.231.0.11
    roles: [etcd, controlplane]
  - name: master2
    address: 10.231.0.12
    roles: [etcd, controlplane]
  - name: node1
    address: 10.231.0.21
    roles: [etcd-learner, worker]
    user: admin
    port: 2222
    sudo: true
"""


def write_invdir(tmp_path: Path) -> Path:
    for f in ("keys/id_ed25519", "keys/known_hosts", "certs/kube-ca.pem", "certs/kube-etcd-client.pem"):
        p = tmp_path / f
        p.parent.mkdir(exist_ok=True)
        p.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n" if f.endswith("id_ed25519") else "x\n")
    (tmp_path / "certs/kube-etcd-client-key.pem").write_text("x\n")
    (tmp_path / "inventory.yaml").write_text(VALID)
    return tmp_path


def sample_data(**extra: object) -> dict:
    """VALID as a dict, with top-level keys replaced or added."""
    import yaml

    d = yaml.safe_load(VALID)
    d.update(extra)
    return d
