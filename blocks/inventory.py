"""Blocks for a cluster: SSH credentials and the inventory with etcd client TLS.

Keys are `SecretStr` fields (masked in the UI and API). To use them, `materialize()` writes them to
a private temporary directory (0700 dir, 0600 files) for the duration of a `with` block and returns
the core's `Inventory` pointing there; the files are removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from etcd_dr.inventory import Inventory, load_inventory, parse_inventory


class SSHCredentials(Block):
    """How etcd-dr logs in to the cluster's hosts: a private key and the hosts' known keys."""

    _block_type_name = "etcd-dr SSH credentials"
    _description = "SSH private key and known_hosts for the hosts of one cluster (strict host keys)."

    user: str = Field(default="root", description="SSH user, unless the inventory says otherwise per host")
    private_key: SecretStr = Field(description="OpenSSH private key (PEM/OpenSSH format, unencrypted)")
    known_hosts: str = Field(description="known_hosts lines for every host: keys are never auto-added")


class ClusterInventory(Block):
    """One cluster: the inventory YAML (README 'Inventory'), its SSH credentials and etcd client TLS."""

    _block_type_name = "etcd-dr cluster inventory"
    _description = "An etcd cluster as etcd-dr sees it: hosts, roles, etcd runtime, and credentials."

    inventory_yaml: str = Field(
        description="the inventory; its ssh key/known_hosts and etcd client paths are "
        "replaced by this block's credentials"
    )
    ssh: SSHCredentials
    etcd_ca_cert: str = Field(description="PEM of the cluster CA (kube-ca.pem)")
    etcd_cert: str = Field(description="PEM client certificate etcd-dr uses to reach etcd")
    etcd_key: SecretStr = Field(description="PEM private key of etcd_cert")

    @classmethod
    def from_inventory_file(cls, path: str | Path) -> ClusterInventory:
        """Capture an inventory file and the files it points at (validated first)."""
        inv = load_inventory(path)
        return cls(
            inventory_yaml=Path(path).read_text(),
            ssh=SSHCredentials(
                user=inv.ssh.user,
                private_key=SecretStr(inv.ssh.key_file.read_text()),
                known_hosts=inv.ssh.known_hosts.read_text(),
            ),
            etcd_ca_cert=inv.etcd.client.ca_cert.read_text(),
            etcd_cert=inv.etcd.client.cert.read_text(),
            etcd_key=SecretStr(inv.etcd.client.key.read_text()),
        )

    @contextlib.contextmanager
    def materialize(self, audit_log: str | Path | None = None) -> Iterator[Inventory]:
        """Yield the core Inventory with credentials written to a private temporary directory."""
        data = yaml.safe_load(self.inventory_yaml) or {}
        with tempfile.TemporaryDirectory(prefix="etcd-dr-cred-") as d:
            os.chmod(d, 0o700)
            files = {
                "id_key": self.ssh.private_key.get_secret_value(),
                "known_hosts": self.ssh.known_hosts,
                "ca.pem": self.etcd_ca_cert,
                "client.pem": self.etcd_cert,
                "client-key.pem": self.etcd_key.get_secret_value(),
            }
            for name, text in files.items():
                fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            if isinstance(data, dict):
                ssh = data.setdefault("ssh", {})
                ssh.update(key_file=f"{d}/id_key", known_hosts=f"{d}/known_hosts")
                ssh.setdefault("user", self.ssh.user)
                etcd = data.setdefault("etcd", {})
                etcd["client"] = {
                    "ca_cert": f"{d}/ca.pem",
                    "cert": f"{d}/client.pem",
                    "key": f"{d}/client-key.pem",
                }
                if audit_log is not None:
                    data["audit_log"] = str(audit_log)
            yield parse_inventory(data, base_dir=Path.cwd())
