"""Is Kubernetes back? kube-apiserver's `/readyz` answers `ok` on every controlplane host, and the
objects stored under `/registry` before the fault are all there, counted per resource prefix
(`/registry/pods/`, `/registry/secrets/`, ...) against what was recorded before it.

Counting is pure over keys (`count_by_resource`); reading them is one keys-only range on the etcd
the API server uses (`registry_counts`); `/readyz` is asked over HTTPS on the host's address with
the cluster CA read from the host itself (RKE regenerates it when its state file has none).
`compare` gives the verdict sentence."""

from __future__ import annotations

import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def readyz(address: str, ca_pem: bytes, *, port: int = APISERVER_PORT, timeout: float = 10.0) -> str | None:
    """None when https://address:port/readyz answers `ok` (verified against ca_pem), else what it
    said or why it could not be asked, one phrase."""
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(ca_pem)
        f.flush()
        ctx = ssl.create_default_context(cafile=f.name)
    url = f"https://{address}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            body = r.read().decode(errors="replace").strip()
            return None if body == "ok" else f"answered {body[:200]!r}"
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip().replace("\n", "; ")
        return f"HTTP {e.code}: {body[:300]}"
    except (OSError, ssl.SSLError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"
