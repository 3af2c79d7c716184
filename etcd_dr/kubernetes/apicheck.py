"""Is Kubernetes back? kube-apiserver's `/readyz` answers `ok` on every controlplane host, and the
objects stored under `/registry` before the fault are all there, counted per resource prefix
(`/registry/pods/`, `/registry/secrets/`, ...) against what was recorded before it.

Counting is pure over keys (`count_by_resource`); reading them is one keys-only range on the etcd
the API server uses (`registry_counts`); `/readyz` is asked over HTTPS on the host's address with
the cluster CA read from the host itself (RKE regenerates it when its state file has none).
`compare` gives the verdict sentence."""

from __future__ import annotations

import http.client
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from etcd_dr.etcd.client import EtcdClient

REGISTRY = "/registry"
# the objects per resource prefix recorded before a fault, in the inventory's state directory
COUNTS_FILE = "registry-counts.json"
APISERVER_PORT = 6443


def resource_prefix(key: str, root: str = REGISTRY) -> str | None:
    """`/registry/pods/default/hello-world-1` -> `/registry/pods/`; None outside root."""
    root = root.rstrip("/") + "/"
    if not key.startswith(root):
        return None
    resource = key[len(root) :].split("/", 1)[0]
    return f"{root}{resource}/" if resource else None


def count_by_resource(keys: Iterable[str], root: str = REGISTRY) -> dict[str, int]:
    """Keys per resource prefix, sorted by prefix. Pure."""
    out: dict[str, int] = {}
    for k in keys:
        p = resource_prefix(k, root)
        if p is not None:
            out[p] = out.get(p, 0) + 1
    return dict(sorted(out.items()))


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def registry_counts(client: EtcdClient, root: str = REGISTRY, *, timeout: float = 10.0) -> dict[str, int]:
    """The objects under root per resource prefix, one keys-only linearizable range (needs quorum,
    as the API server's own reads)."""
    start = (root.rstrip("/") + "/").encode()
    r = client.range(start, _prefix_end(start), keys_only=True, timeout=timeout)
    return count_by_resource((kv.key.decode(errors="replace") for kv in r.kvs), root)


@dataclass(frozen=True)
class CountDiff:
    prefix: str
    before: int
    after: int


def compare(before: Mapping[str, int], after: Mapping[str, int]) -> tuple[CountDiff, ...]:
    """The prefixes with fewer objects now than before (more is fine: the cluster lives on). Pure."""
    return tuple(CountDiff(p, n, after.get(p, 0)) for p, n in sorted(before.items()) if after.get(p, 0) < n)


def missing_sentence(diffs: Iterable[CountDiff]) -> str:
    return ", ".join(f"{d.prefix} {d.after} of {d.before}" for d in diffs)


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to host:port whose TCP connection goes to `dial` instead (a bastion's forward); TLS still
    verifies the server's certificate for host."""

    def __init__(self, host: str, port: int, dial: tuple[str, int], **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self._dial = dial

    def connect(self) -> None:
        sock = socket.create_connection(self._dial, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def readyz(
    address: str,
    ca_pem: bytes,
    *,
    port: int = APISERVER_PORT,
    timeout: float = 10.0,
    via: tuple[str, int] | None = None,
) -> str | None:
    """None when https://address:port/readyz answers `ok` (verified against ca_pem), else what it
    said or why it could not be asked, one phrase. `via`: where to connect instead (the inventory's
    bastion's forward to address:port); the certificate is still checked for address."""
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(ca_pem)
        f.flush()
        ctx = ssl.create_default_context(cafile=f.name)
    url = f"https://{address}:{port}/readyz"
    if via is not None:
        conn = _Pinned(address, port, via, timeout=timeout, context=ctx)
        try:
            conn.request("GET", "/readyz")
            r = conn.getresponse()
            body = r.read().decode(errors="replace").strip()
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            return f"{url}: {e} (through the bastion)"
        finally:
            conn.close()
        if r.status != 200:
            return f"HTTP {r.status}: {body.replace(chr(10), '; ')[:300]}"
        return None if body == "ok" else f"answered {body[:200]!r}"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            body = r.read().decode(errors="replace").strip()
            return None if body == "ok" else f"answered {body[:200]!r}"
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip().replace("\n", "; ")
        return f"HTTP {e.code}: {body[:300]}"
    except (OSError, ssl.SSLError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"
