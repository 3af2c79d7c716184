"""STAND-IN support: etcd's v3 JSON gateway (`POST /v3/...` on the client port, mTLS), for the lab's
stand-in `rke` and `kube-apiserver`. Standard library only: it runs on the lab's hosts with the
system's python3 (and inside the stand-in kube-apiserver container), not in etcd-dr's venv.

The real kube-apiserver and RKE talk gRPC; the gateway serves the same RPCs with the same errors
(`etcdserver: request timed out` when quorum is lost), which is all the stand-ins need."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass


class GatewayError(Exception):
    """etcd answered with an error (its own message, e.g. `etcdserver: request timed out`:
    answered=True), or could not be reached (the transport's message)."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass(frozen=True)
class Tls:
    ca_file: str
    cert_file: str
    key_file: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def prefix_end(prefix: bytes) -> bytes:
    """The range end of every key starting with prefix (etcd's `--prefix`)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"


def call(
    endpoint: str, rpc: str, body: dict, tls: Tls, timeout: float = 15.0, deadline: int | None = None
) -> dict:
    """POST endpoint/v3/<rpc> (e.g. "kv/range"); the decoded answer. Raises GatewayError with
    etcd's own error message. deadline: seconds the gRPC call may take (the gateway's
    `Grpc-Timeout`): a membership change with quorum lost otherwise waits for ever (etcd bounds
    it by the caller's context only)."""
    headers = {"Content-Type": "application/json"}
    if deadline is not None:
        headers["Grpc-Timeout"] = f"{deadline}S"
    req = urllib.request.Request(
        f"{endpoint.rstrip('/')}/v3/{rpc}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls.context()) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            d = json.loads(e.read() or b"{}")
        except ValueError:
            d = {}
        raise GatewayError(
            str(d.get("error") or d.get("message") or f"HTTP {e.code}"), answered=True
        ) from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        reason = getattr(e, "reason", e)
        raise GatewayError(f"{endpoint}: {reason}") from None


def count(endpoint: str, prefix: str, tls: Tls, timeout: float = 15.0) -> int:
    """Keys under prefix, a linearizable read (needs quorum, as the real apiserver's reads)."""
    p = prefix.encode()
    d = call(
        endpoint,
        "kv/range",
        {"key": b64(p), "range_end": b64(prefix_end(p)), "count_only": True},
        tls,
        timeout,
    )
    return int(d.get("count") or 0)


def keys(endpoint: str, prefix: str, tls: Tls, timeout: float = 15.0) -> list[str]:
    p = prefix.encode()
    d = call(
        endpoint,
        "kv/range",
        {"key": b64(p), "range_end": b64(prefix_end(p)), "keys_only": True},
        tls,
        timeout,
    )
    return [base64.b64decode(kv["key"]).decode(errors="replace") for kv in d.get("kvs") or []]


def members(endpoint: str, tls: Tls, timeout: float = 15.0) -> list[dict]:
    return list(call(endpoint, "cluster/member/list", {}, tls, timeout).get("members") or [])


def remove_member(endpoint: str, member_id: str, tls: Tls, deadline: int = 15) -> None:
    """With quorum lost this ends at the deadline: `context deadline exceeded` (RKE uses etcd's v2
    members API, where etcd's own request timeout answers `etcdserver: request timed out`; the
    lab's etcd runs without --enable-v2)."""
    call(endpoint, "cluster/member/remove", {"ID": member_id}, tls, timeout=deadline + 15, deadline=deadline)
