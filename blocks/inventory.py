"""Blocks for a cluster: SSH credentials and the inventory with etcd client TLS.

Keys are `SecretStr` fields (masked in the UI and in API answers without `include_secrets`; the
Prefect server itself has no authentication: README, "What the Prefect server exposes").
`materialize()` hands them to the core in memory (`InMemoryFile`: paramiko and gRPC take the bytes):
no key is ever written to disk, so a killed run leaves none behind. Relative paths in the inventory
(audit_log, state_dir, snapshots) resolve against `base_dir`, the inventory file's directory, never
the worker's working directory: the CLI and the flows share one audit log, journal and catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import yaml
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from etcd_dr.audit import register_secret
from etcd_dr.errors import InputError
from etcd_dr.inventory import (
    InMemoryFile,
    Inventory,
    InventoryError,
    SshSettings,
    load_inventory,
    parse_inventory,
    state_paths,
)


class SSHCredentials(Block):
    """How etcd-dr logs in to the cluster's hosts: a private key and the hosts' known keys."""

    _block_type_name = "etcd-dr SSH credentials"
    _description = "SSH private key and known_hosts for the hosts of one cluster (strict host keys)."

    user: str = Field(
        default=SshSettings.__pydantic_fields__["user"].default,  # the inventory's own default
        description="SSH user, unless the inventory says otherwise per host",
    )
    private_key: SecretStr | None = Field(
        default=None,
        description="OpenSSH private key (unencrypted). Empty: the inventory's ssh.key_file on the "
        "worker, or its ssh-agent (ssh.agent: true): the server then holds no SSH key",
    )
    known_hosts: str = Field(description="known_hosts lines for every host: keys are never auto-added")


# Inventory paths on this machine that are not credentials (from the model's declarations): they
# must resolve the same for every process (CLI, worker), so a relative one needs the block's base_dir.
_STATE_PATHS = state_paths()


class ClusterInventory(Block):
    """One cluster: the inventory YAML (README 'Inventory'), its SSH credentials and etcd client TLS."""

    _block_type_name = "etcd-dr cluster inventory"
    _description = "An etcd cluster as etcd-dr sees it: hosts, roles, etcd runtime, and credentials."

    inventory_yaml: str = Field(
        description="the inventory (JSON Schema: `etcd-dr inventory schema`); its ssh key/known_hosts "
        "and etcd client paths are replaced by this block's credentials"
    )
    base_dir: str | None = Field(
        default=None,
        description="absolute directory the inventory's relative paths (audit_log, state_dir, "
        "snapshots.dir) resolve against on the worker: the inventory file's directory",
    )
    ssh: SSHCredentials
    etcd_ca_cert: str = Field(description="PEM of the cluster CA (kube-ca.pem)")
    etcd_cert: str = Field(description="PEM client certificate etcd-dr uses to reach etcd")
    etcd_key: SecretStr = Field(description="PEM private key of etcd_cert")

    @classmethod
    def from_inventory_file(cls, path: str | Path, *, ssh_key: bool = True) -> ClusterInventory:
        """Capture an inventory file and the files it points at (validated first). `ssh_key=False`
        leaves the SSH key out of the block: the worker then reads the inventory's ssh.key_file (relative:
        to base_dir) or asks its ssh-agent (ssh.agent: true)."""
        inv = load_inventory(path)
        return cls(
            inventory_yaml=Path(path).read_text(),
            base_dir=str(Path(path).expanduser().absolute().parent),
            ssh=SSHCredentials(
                user=inv.ssh.user,
                private_key=SecretStr(Path(inv.ssh.key_file).read_text())
                if ssh_key and inv.ssh.key_file is not None
                else None,
                known_hosts=Path(inv.ssh.known_hosts).read_text(),
            ),
            etcd_ca_cert=Path(inv.etcd.client.ca_cert).read_text(),
            etcd_cert=Path(inv.etcd.client.cert).read_text(),
            etcd_key=SecretStr(Path(inv.etcd.client.key).read_text()),
        )

    def _base_dir(self, data: dict) -> Path | None:
        if self.base_dir:
            base = Path(self.base_dir)
            if not base.is_absolute():
                raise InputError(
                    f"base_dir: {self.base_dir!r} is not absolute; give the inventory's directory "
                    "(from_inventory_file sets it)"
                )
            return base
        for keys in _STATE_PATHS:
            v: object = data
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, str) and not Path(v).expanduser().is_absolute():
                raise InputError(
                    f"{'.'.join(keys)}: {v!r} is relative and the block has no base_dir; set base_dir "
                    "to the directory it is relative to (from_inventory_file does), or make it absolute"
                )
        return None  # nothing relative but the credentials, which this block holds

    @model_validator(mode="after")
    def _the_model_accepts_the_inventory(self) -> ClusterInventory:
        """A block whose inventory the core's model refuses is refused when it is made or saved, with
        the same problems, not when a flow runs. Local files are not looked for (the worker's)."""
        try:
            data = self._with_credentials(yaml.safe_load(self.inventory_yaml) or {})
            parse_inventory(data, base_dir=Path(self.base_dir or "/"), check_files=False)
        except InventoryError as e:
            raise ValueError(str(e)) from None
        except yaml.YAMLError as e:
            raise ValueError(f"inventory_yaml: not valid YAML ({e.__class__.__name__}); fix it") from None
        return self

    def _with_credentials(self, data: object, audit_log: str | Path | None = None) -> object:
        """The inventory data with this block's credentials in place of its paths (held in memory)."""
        if not isinstance(data, dict):
            return data  # parse_inventory says what is wrong with it
        key = self.ssh.private_key.get_secret_value() if self.ssh.private_key else None
        ssh = data.setdefault("ssh", {})
        if isinstance(ssh, dict):
            ssh["known_hosts"] = InMemoryFile(self.ssh.known_hosts, "ssh.known_hosts (block)")
            if key is not None:
                ssh["key_file"] = InMemoryFile(key, "ssh.key_file (block)")
            ssh.setdefault("user", self.ssh.user)
        etcd = data.setdefault("etcd", {})
        if isinstance(etcd, dict):
            etcd["client"] = {
                "ca_cert": InMemoryFile(self.etcd_ca_cert, "etcd.client.ca_cert (block)"),
                "cert": InMemoryFile(self.etcd_cert, "etcd.client.cert (block)"),
                "key": InMemoryFile(self.etcd_key.get_secret_value(), "etcd.client.key (block)"),
            }
        if audit_log is not None:
            data["audit_log"] = str(audit_log)
        return data

    @contextlib.contextmanager
    def materialize(self, audit_log: str | Path | None = None) -> Iterator[Inventory]:
        """Yield the core Inventory with this block's credentials held in memory (nothing written)."""
        data = self._with_credentials(yaml.safe_load(self.inventory_yaml) or {}, audit_log)
        if self.ssh.private_key:
            register_secret(self.ssh.private_key.get_secret_value())  # masked wherever the core redacts
        register_secret(self.etcd_key.get_secret_value())
        base = self._base_dir(data) if isinstance(data, dict) else None
        inv = parse_inventory(data, base_dir=base or Path("/"))
        # without a base_dir, state_path() needs an absolute audit_log or state_dir: never the cwd
        yield inv if base else dataclasses.replace(inv, base_dir=None)
