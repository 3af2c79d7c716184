"""A small etcd v3 gRPC client: the RPCs etcd-dr uses, mTLS, endpoint failover inside one deadline.

    with EtcdClient(["https://10.0.0.11:2379", ...], ca_cert=ca, cert=crt, key=key) as c:
        members = c.member_list()
        st = c.status("https://10.0.0.11:2379")
        snap = c.snapshot("https://10.0.0.11:2379", Path("/backups/etcd.db"))

Messages come from the project's own proto (etcd_dr/etcd/proto, package etcddr.v3) and are sent to
etcd's method paths (`/etcdserverpb.Cluster/MemberList`) with `grpc.Channel.unary_unary`: no service
stubs, no clash with another etcd proto set in the process.

Which calls fail over
- Cluster-wide reads try the endpoints in turn within ONE deadline (`timeout`, default
  `request_timeout`): member_list, alarm_list, range. An endpoint that cannot be reached, does not
  answer within its share of the time left (at least `dial_timeout`), is a learner (`rpc not supported
  for learner`), or reports no leader / `request timed out`, is skipped.
- Cluster-wide writes (put, member_add, member_remove, member_promote) move to the next endpoint
  only when the request certainly never reached etcd's state machine: each write is preceded by a
  Status probe of the same member bounded by `dial_timeout` (a dead or hung member is skipped
  without the write being sent), and the member may refuse it as a learner or for having no leader
  (writes carry etcd's `hasleader` metadata, so a member cut off from the leader refuses at once
  instead of hanging). A write that was sent and then timed out raises EtcdTimeout: its outcome is
  unknown, the caller checks its postcondition before trying again.
- Per-endpoint calls never fail over: status, hash_kv, snapshot, watch. They may name any endpoint,
  not only the client's list (a member just added, say). A watch is a stream on one member: the
  caller (etcd_dr.deltalog.stream) resumes it elsewhere from the last revision it kept.

When a whole round failed and some failures may pass (no answer, no leader: a member restarting,
an election), the failed endpoints are tried again after a short pause (100 ms doubling to 500 ms)
until the deadline; learners are not asked again. The endpoint that answered last is tried first
next time, one that failed goes last. When the deadline is reached, an etcd answer beats a
transport failure: the last etcd error is raised (typed, e.g. NoLeader when quorum is lost), else
EtcdUnavailable naming each endpoint and why.

A learner serves only Status and serializable Range (3.4 and 3.5); it refuses even a
non-linearizable MemberList. A 3.4 learner refuses Snapshot, a 3.5 learner serves it.

Channels: one per endpoint, made on first use and reused; `dial_timeout` bounds each connection
attempt (gRPC's minimum connect timeout) and reconnect backoff is capped so a restarted member is
reachable again within about a second. The private key is held in memory only to build the TLS
credentials and appears in no message or repr.
"""

from __future__ import annotations

import contextlib
import enum
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

# gRPC's C core prints every failed TLS handshake to stderr at INFO; a dead member during an
# incident is expected, and our own errors say what failed.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from etcd_dr.errors import InputError
from etcd_dr.etcd import errors as E
from etcd_dr.etcd.dbsink import DbSink
from etcd_dr.etcd.gen import etcddr_rpc_pb2 as pb
from etcd_dr.localfs import fsync_dir

T = TypeVar("T")

# etcd's method paths: "/<proto package>.<service>/<method>". The package is etcd's, not ours.
_KV = "/etcdserverpb.KV/"
_CLUSTER = "/etcdserverpb.Cluster/"
_MAINT = "/etcdserverpb.Maintenance/"
_WATCH = "/etcdserverpb.Watch/Watch"
_LEASE = "/etcdserverpb.Lease/"

# etcd refuses a request at once with `etcdserver: no leader` when this is set and it has no leader.
_REQUIRE_LEADER = (("hasleader", "true"),)


# Errors after which a READ may be retried on another endpoint (they say nothing about the data).
_READ_RETRYABLE = (E.NotSupportedOnLearner, E.NoLeader, E.EtcdTimeout)
# Errors that prove a WRITE was refused before it was proposed.
_WRITE_RETRYABLE = (E.NotSupportedOnLearner, E.NoLeader)
# gRPC transport messages meaning "no connection was made": nothing was sent.
_NOT_CONNECTED = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "dns resolution failed",
    "name resolution",
    "no route to host",
    "network is unreachable",
    "handshake",
)


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseHeader:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


@dataclass(frozen=True)
class Member:
    id: int
    name: str  # empty until the member has started and published itself
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]  # empty until started
    is_learner: bool

    @property
    def id_hex(self) -> str:
        """The id as etcdctl prints it."""
        return f"{self.id:x}"


@dataclass(frozen=True)
class MemberAddResult:
    member: Member
    members: tuple[Member, ...]
    header: ResponseHeader


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: int
    leader: int  # member id this member believes leads; 0 when it knows none
    raft_index: int  # committed
    raft_applied_index: int
    raft_term: int
    revision: int
    version: str
    db_size: int
    db_size_in_use: int
    is_learner: bool
    errors: tuple[str, ...]  # alarms and health as etcd reports them, e.g. "memberID:... alarm:NOSPACE"
    cluster_id: int = 0

    @property
    def is_leader(self) -> bool:
        return self.member_id != 0 and self.member_id == self.leader


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    endpoint: str
    header: ResponseHeader
    kvs: tuple[KeyValue, ...]
    more: bool
    count: int


@dataclass(frozen=True)
class PutResult:
    endpoint: str
    header: ResponseHeader

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True)
class Alarm:
    member_id: int
    alarm: str  # "NOSPACE" | "CORRUPT"


@dataclass(frozen=True)
class HashKVResult:
    endpoint: str
    member_id: int
    hash: int
    compact_revision: int
    revision: int  # the store's revision when hashed (header)
    hash_revision: int  # 3.6+: the revision the hash covers; 0 before


@dataclass(frozen=True)
class SnapshotResult:
    endpoint: str
    path: Path
    size: int  # bytes in the file, etcd's trailing sha256 included (as `etcdctl snapshot save` writes it)
    sha256: str  # hex digest of the whole file
    db_sha256_ok: bool  # the trailing sha256 etcd sent matches the db bytes
    member_id: int
    cluster_id: int
    revision: int | None  # from the stream's header where etcd sends one; 3.4.23 and 3.5.16 send none
    revision_bracket: tuple[int, int]  # the member's revision just before and just after the stream
    duration_s: float

    @property
    def revision_exact(self) -> int | None:
        """The snapshot's revision when known for certain: from the header, or when no write landed
        on the member while streaming."""
        if self.revision:
            return self.revision
        lo, hi = self.revision_bracket
        return lo if lo == hi else None


STREAM_WINDOW = 4 << 20  # a stream's flow-control window: what etcd may send before we read it


def snapshot_response_fields(raw: bytes) -> tuple[memoryview | None, memoryview]:
    """(header, blob) of a serialized SnapshotResponse, as slices of `raw` (protobuf's wire format:
    header = 1 and blob = 3 are length-delimited; remaining_bytes = 2 and version = 4, and any field
    a newer etcd adds, are skipped). A malformed message raises EtcdError."""
    view = memoryview(raw)
    header: memoryview | None = None
    blob = view[:0]
    i, end = 0, len(view)
    try:
        while i < end:
            tag, i = _varint(view, i)
            kind = tag & 7
            if kind == 0:
                _, i = _varint(view, i)
            elif kind == 2:
                n, i = _varint(view, i)
                if i + n > end:
                    raise ValueError("a field runs past the message")
                if tag >> 3 == 1:
                    header = view[i : i + n]
                elif tag >> 3 == 3:
                    blob = view[i : i + n]
                i += n
            elif kind in (1, 5):
                i += 8 if kind == 1 else 4
            else:
                raise ValueError(f"wire type {kind}")
        if i != end:
            raise ValueError("a field runs past the message")
    except (ValueError, IndexError) as e:
        raise E.EtcdError(f"snapshot stream: a malformed SnapshotResponse ({len(raw)} bytes): {e}") from None
    return header, blob


def _varint(view: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = view[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" | "DELETE"
    kv: KeyValue  # a DELETE's kv has the key and the deleting revision as mod_revision, no value
    prev_kv: KeyValue | None  # the key before this event (asked with prev_kv; None if it did not exist)


@dataclass(frozen=True)
class WatchBatch:
    """One WatchResponse. `revision` is the member's store revision when it was sent (header): a
    progress notification (no events) says every event up to it was delivered."""

    revision: int
    events: tuple[WatchEvent, ...]
    cluster_id: int = 0

    @property
    def progress(self) -> bool:
        return not self.events


@dataclass(frozen=True)
class TxnPut:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class TxnDelete:
    key: bytes


class CompareTarget(enum.StrEnum):
    MOD = "mod"  # the key's mod_revision
    VERSION = "version"  # the key's version (0: absent)


@dataclass(frozen=True)
class TxnCompare:
    """A transaction's condition: `target` of `key` EQUALS `value` (etcd's Compare, EQUAL only)."""

    key: bytes
    target: CompareTarget
    value: int


@dataclass(frozen=True)
class TxnOutcome:
    succeeded: bool  # the compares held and the ops were applied (False: nothing was written)
    revision: int  # the store's revision after it (a write txn's own revision)


class PendingTxn:
    """A transaction sent and not yet answered (EtcdClient.txn_async); result() waits for it."""

    def __init__(self, client: EtcdClient, endpoint: str, future: Any, timeout: float) -> None:
        self._client, self._endpoint, self._future, self._timeout = client, endpoint, future, timeout

    def result(self) -> TxnOutcome:
        try:
            r = self._future.result()
        except grpc.RpcError as e:
            raise self._client._classify("txn", self._endpoint, e, self._timeout).error from None
        return TxnOutcome(bool(r.succeeded), int(r.header.revision))


def _txn_request(ops: Sequence[TxnPut | TxnDelete], compare: Sequence[TxnCompare]) -> Any:
    return pb.TxnRequest(
        compare=[
            pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=c.key, mod_revision=c.value)
            if c.target is CompareTarget.MOD
            else pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VERSION, key=c.key, version=c.value)
            for c in compare
        ],
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=o.key, value=o.value, lease=o.lease))
            if isinstance(o, TxnPut)
            else pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=o.key))
            for o in ops
        ],
    )


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class Watch:
    """An open watch stream on one member. `get(timeout)` returns the next WatchBatch, or None when
    nothing arrived within timeout (a hung member is the caller's to judge: ask progress and wait);
    it raises RevisionCompacted (with `compact_revision`) when etcd compacted past the start,
    NoLeader when the member lost its leader (the stream carries etcd's `hasleader`), and the
    classified transport error when the stream breaks. `request_progress()` asks for a progress
    notification (3.4+). `cancel()` ends it; use as a context manager."""

    _END = object()

    def __init__(
        self, client: EtcdClient, endpoint: str, create: Any, *, require_leader: bool = True
    ) -> None:
        self.endpoint = endpoint
        self._client = client
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._requests.put(pb.WatchRequest(create_request=create))
        call = client._channel(endpoint).stream_stream(
            _WATCH,
            request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.WatchResponse.FromString,
        )
        self._stream = call(self._request_iter(), metadata=_REQUIRE_LEADER if require_leader else None)
        self._closed = False
        self.watch_id: int | None = None
        self._reader = threading.Thread(target=self._read, name=f"watch-{endpoint}", daemon=True)
        self._reader.start()

    def _request_iter(self) -> Any:
        while True:
            r = self._requests.get()
            if r is self._END:
                return
            yield r

    def _read(self) -> None:
        try:
            for resp in self._stream:
                self._responses.put(resp)
        except grpc.RpcError as e:
            self._responses.put(e)
        except Exception as e:  # handed to the consumer, never lost in a thread
            self._responses.put(e)
        self._responses.put(self._END)

    def request_progress(self) -> None:
        self._requests.put(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))

    def get(self, timeout: float) -> WatchBatch | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._responses.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return None
            if item is self._END:
                self._responses.put(item)  # stays ended
                raise E.EtcdUnavailable("watch", [(self.endpoint, "the stream ended")])
            if isinstance(item, grpc.RpcError):
                self._responses.put(self._END)
                if self._closed:
                    raise E.EtcdUnavailable("watch", [(self.endpoint, "cancelled")])
                raise self._client._classify("watch", self.endpoint, item, None).error from None
            if isinstance(item, Exception):
                self._responses.put(self._END)
                raise E.EtcdRequestError(f"watch on {self.endpoint}: {item}", endpoint=self.endpoint)
            if item.compact_revision:
                raise E.RevisionCompacted(
                    f"watch on {self.endpoint}: required revision has been compacted "
                    f"(compacted up to {item.compact_revision})",
                    endpoint=self.endpoint,
                    details="mvcc: required revision has been compacted",
                    compact_revision=int(item.compact_revision),
                )
            if item.canceled:
                reason = item.cancel_reason or "cancelled by etcd"
                cls = E.error_class_for(reason) or E.EtcdRequestError
                raise cls(f"watch on {self.endpoint}: {reason}", endpoint=self.endpoint, details=reason)
            if item.created:
                self.watch_id = int(item.watch_id)
                if not item.events:
                    continue
            events = tuple(
                WatchEvent(
                    "DELETE" if ev.type == pb.Event.DELETE else "PUT",
                    _kv(ev.kv),
                    _kv(ev.prev_kv) if ev.HasField("prev_kv") else None,
                )
                for ev in item.events
            )
            return WatchBatch(int(item.header.revision), events, int(item.header.cluster_id))

    def cancel(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(self._END)
        self._stream.cancel()
        self._reader.join(timeout=5.0)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# -- the client ------------------------------------------------------------------------------------


def _read_pem(value: bytes | str | Path, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as e:
        # Name the path and the error, never the content.
        raise InputError(f"etcd client {what}: cannot read {value}: {e.strerror or e}") from None


def _check_tls_material(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """Fail early and clearly (gRPC would say only 'Failed to create security handshaker' at the
    first call). Messages name what is wrong, never the content.

    With the ssl module (OpenSSL), which gRPC has loaded already: `cryptography` for the same checks
    cost every command that talks to etcd ~11 MB of RSS and 0.15-0.3 s of imports (issue 14). The
    cert and key reach OpenSSL as memfds (anonymous memory, never a file on disk): load_cert_chain
    reads paths only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for pem, what in ((ca_pem, "ca_cert"), (cert_pem, "cert")):
        try:  # a trust store parses every certificate given: the client's own cert too
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem.decode("ascii"))
        except (ssl.SSLError, ValueError):
            raise InputError(f"etcd client {what}: not a PEM certificate") from None
    with _memfd(cert_pem) as cert_path, _memfd(key_pem) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path, password=_no_password)
        except _Encrypted:
            raise InputError("etcd client key: not an unencrypted PEM private key") from None
        except ssl.SSLError as e:
            if e.reason == "KEY_VALUES_MISMATCH":
                raise InputError("etcd client key does not match the client certificate") from None
            raise InputError("etcd client key: not an unencrypted PEM private key") from None


class _Encrypted(Exception):
    pass


def _no_password() -> bytes:
    # OpenSSL asks for a passphrase only for an encrypted key; without this callback it would
    # prompt on the terminal
    raise _Encrypted


@contextlib.contextmanager
def _memfd(data: bytes) -> Iterator[str]:
    fd = os.memfd_create("etcd-dr-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _target(endpoint: str) -> str:
    """'https://10.0.0.1:2379' -> '10.0.0.1:2379' (gRPC's target syntax; IPv6 stays bracketed)."""
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    u = urlsplit(endpoint)
    if u.scheme != "https":
        raise InputError(f"etcd endpoint {endpoint!r}: only https:// (mTLS) is supported")
    if not u.hostname or u.port is None:
        raise InputError(f"etcd endpoint {endpoint!r}: expected https://HOST:PORT")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{u.port}"


def _header(h: Any) -> ResponseHeader:
    return ResponseHeader(int(h.cluster_id), int(h.member_id), int(h.revision), int(h.raft_term))


def _member(m: Any) -> Member:
    return Member(
        id=int(m.ID),
        name=m.name,
        peer_urls=tuple(m.peerURLs),
        client_urls=tuple(m.clientURLs),
        is_learner=bool(m.isLearner),
    )


class _Failure(Exception):
    """One endpoint's failure, classified. Internal to the failover loop."""

    def __init__(self, endpoint: str, reason: str, error: E.EtcdError, *, answered: bool, sent: bool) -> None:
        super().__init__(reason)
        self.endpoint = endpoint
        self.reason = reason
        self.error = error
        self.answered = answered  # etcd itself answered (an etcd error), vs no answer at all
        self.sent = sent  # the request may have reached etcd


class _NotSent(Exception):
    """The pre-write probe failed: the write itself was never sent."""

    def __init__(self, error: grpc.RpcError, timeout: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.timeout = timeout


class Dialer(Protocol):
    """How this machine reaches a member it cannot dial itself (etcd_dr.executor.Bastion)."""

    where: str  # for messages: "the bastion 10.0.0.5:22"

    def forward(self, address: str, port: int) -> tuple[str, int]:
        """A local (address, port) whose connections reach address:port."""
        ...

    def why_not(self, address: str, port: int) -> str | None:
        """Why the last connection to address:port could not be made, if it could not."""
        ...


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class EtcdClient:
    """mTLS gRPC client for a set of etcd endpoints. Thread-safe; close() or use as a context manager."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_cert: bytes | str | Path,
        cert: bytes | str | Path,
        key: bytes | str | Path,
        dial_timeout: float = 2.0,
        request_timeout: float = 5.0,
        server_names: Mapping[str, str] | None = None,
        dialer: Dialer | None = None,
    ) -> None:
        """`server_names`: endpoint -> the name its certificate must carry, for an endpoint that is
        not the member's own address (a tunnel's loopback port). `dialer`: every other endpoint is
        dialed at the local address the dialer gives for it (a forward through a bastion), its
        certificate still checked for the endpoint's own host; endpoints and messages stay the
        members' URLs."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise InputError("etcd client: no endpoints given")
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self._targets = {ep: _target(ep) for ep in self.endpoints}
        self._server_names = dict(server_names or {})
        self._dialer = dialer
        self._via: dict[str, tuple[str, int]] = {}  # endpoint -> the member's (host, port) dialed
        if dial_timeout <= 0 or request_timeout <= 0:
            raise InputError("etcd client: dial_timeout and request_timeout must be > 0")
        self.dial_timeout = float(dial_timeout)
        self.request_timeout = float(request_timeout)
        ca_pem, cert_pem, key_pem = (
            _read_pem(ca_cert, "ca_cert"),
            _read_pem(cert, "cert"),
            _read_pem(key, "key"),
        )
        _check_tls_material(ca_pem, cert_pem, key_pem)
        self._creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        # Failover order: the endpoint that answered last goes first, one that failed goes last.
        self._order: list[str] = list(self.endpoints)
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdClient(endpoints={list(self.endpoints)!r})"

    # -- lifecycle --

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cluster-wide calls (fail over) --

    def member_list(
        self, *, linearizable: bool = True, timeout: float | None = None, endpoint: str | None = None
    ) -> tuple[Member, ...]:
        """All members. Linearizable (default) reflects every committed change, e.g. a promote a
        moment ago; it needs quorum. linearizable=False takes the answering member's local view (works
        without quorum). A learner refuses both (`rpc not supported for learner`): the next endpoint
        is asked. With `endpoint`, only that member is asked (no failover): with quorum lost, the
        member observation found most advanced, instead of dead endpoints costing a dial timeout each."""

        def call(ep: str, t: float) -> tuple[Member, ...]:
            if linearizable:
                # 3.4 has no linearizable member list: a linearizable read on the same member first
                # makes it apply everything committed so far, which is what 3.5's flag does.
                self._unary(
                    ep,
                    _KV + "Range",
                    pb.RangeRequest(key=b"\0", count_only=True),
                    pb.RangeResponse,
                    t,
                    require_leader=True,
                )
            req = pb.MemberListRequest(linearizable=linearizable)
            resp = self._unary(
                ep, _CLUSTER + "MemberList", req, pb.MemberListResponse, t, require_leader=linearizable
            )
            return tuple(_member(m) for m in resp.members)

        if endpoint is not None:
            t = timeout if timeout is not None else self.request_timeout
            return self._single("member list", endpoint, lambda: call(endpoint, t))
        return self._failover("member list", call, write=False, timeout=timeout)

    def member_add(
        self, peer_urls: Sequence[str], *, is_learner: bool = False, timeout: float | None = None
    ) -> MemberAddResult:
        """Add a member (a learner with is_learner=True). UnhealthyCluster while peers have been
        connected for less than 5 s (strict reconfig check): retry within a deadline. TooManyLearners
        when the cluster has its one learner already."""
        req = pb.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner)

        def call(ep: str, t: float) -> MemberAddResult:
            r = self._unary(ep, _CLUSTER + "MemberAdd", req, pb.MemberAddResponse, t, require_leader=True)
            return MemberAddResult(_member(r.member), tuple(_member(m) for m in r.members), _header(r.header))

        return self._failover("member add", call, write=True, timeout=timeout)

    def member_remove(self, member_id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        """Remove a member; returns the members left. MemberNotFound if it is not (or no longer) there."""
        req = pb.MemberRemoveRequest(ID=member_id)

        def call(ep: str, t: float) -> tuple[Member, ...]:
            r = self._unary(
                ep, _CLUSTER + "MemberRemove", req, pb.MemberRemoveResponse, t, require_leader=True
            )
            return tuple(_member(m) for m in r.members)

        return self._failover("member remove", call, write=True, timeout=timeout)

    def member_promote(self, member_id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        """Promote a learner to voter. LearnerNotInSync while it lags (retry); MemberNotLearner if it is
        a voter already."""
        req = pb.MemberPromoteRequest(ID=member_id)

        def call(ep: str, t: float) -> tuple[Member, ...]:
            r = self._unary(
                ep, _CLUSTER + "MemberPromote", req, pb.MemberPromoteResponse, t, require_leader=True
            )
            return tuple(_member(m) for m in r.members)

        return self._failover("member promote", call, write=True, timeout=timeout)

    def alarm_list(self, *, timeout: float | None = None) -> tuple[Alarm, ...]:
        """Active alarms (NOSPACE, CORRUPT). Goes through raft: needs quorum."""
        req = pb.AlarmRequest(action=pb.AlarmRequest.GET)

        def call(ep: str, t: float) -> tuple[Alarm, ...]:
            r = self._unary(ep, _MAINT + "Alarm", req, pb.AlarmResponse, t, require_leader=True)
            return tuple(Alarm(int(a.memberID), pb.AlarmType.Name(a.alarm)) for a in r.alarms)

        return self._failover("alarm list", call, write=False, timeout=timeout)

    def range(
        self,
        key: bytes | str,
        range_end: bytes | str | None = None,
        *,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        limit: int = 0,
        revision: int = 0,
        timeout: float | None = None,
        endpoint: str | None = None,
    ) -> RangeResult:
        """Read [key, range_end) (just key when range_end is None; b"\\0" means to the end).
        Linearizable by default (needs quorum, not on a learner); serializable=True reads the answering
        member's local state (works without quorum and on a learner, may be stale). With `endpoint`,
        only that member is asked (no failover)."""
        req = pb.RangeRequest(
            key=_b(key),
            range_end=_b(range_end) if range_end is not None else b"",
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            limit=limit,
            revision=revision,
        )

        def call(ep: str, t: float) -> RangeResult:
            r = self._unary(ep, _KV + "Range", req, pb.RangeResponse, t, require_leader=not serializable)
            kvs = tuple(
                KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in r.kvs
            )
            return RangeResult(ep, _header(r.header), kvs, bool(r.more), int(r.count))

        if endpoint is not None:
            t = timeout if timeout is not None else self.request_timeout
            return self._single("range", endpoint, lambda: call(endpoint, t))
        return self._failover("range", call, write=False, timeout=timeout)

    def put(self, key: bytes | str, value: bytes | str, *, timeout: float | None = None) -> PutResult:
        req = pb.PutRequest(key=_b(key), value=_b(value))

        def call(ep: str, t: float) -> PutResult:
            r = self._unary(ep, _KV + "Put", req, pb.PutResponse, t, require_leader=True)
            return PutResult(ep, _header(r.header))

        return self._failover("put", call, write=True, timeout=timeout)

    def put_if_mod_revision(
        self, key: bytes | str, value: bytes | str, mod_revision: int, *, timeout: float | None = None
    ) -> tuple[bool, int]:
        """Put only while the key's mod_revision is still `mod_revision` (0: the key is absent), in one
        transaction. Returns (put?, the cluster's revision): False means someone changed it meanwhile."""
        op = pb.RequestOp(request_put=pb.PutRequest(key=_b(key), value=_b(value)))
        return self._if_mod_revision(key, mod_revision, op, timeout)

    def delete_if_mod_revision(
        self, key: bytes | str, mod_revision: int, *, timeout: float | None = None
    ) -> tuple[bool, int]:
        """Delete the key only while its mod_revision is still `mod_revision`, in one transaction.
        Returns (deleted?, the cluster's revision): False means someone changed it meanwhile."""
        op = pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=_b(key)))
        return self._if_mod_revision(key, mod_revision, op, timeout)

    def _if_mod_revision(
        self, key: bytes | str, mod_revision: int, op: Any, timeout: float | None
    ) -> tuple[bool, int]:
        cmp = pb.Compare(
            result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=_b(key), mod_revision=mod_revision
        )
        req = pb.TxnRequest(compare=[cmp], success=[op])

        def call(ep: str, t: float) -> tuple[bool, int]:
            r = self._unary(ep, _KV + "Txn", req, pb.TxnResponse, t, require_leader=True)
            return bool(r.succeeded), int(r.header.revision)

        return self._failover("txn", call, write=True, timeout=timeout)

    def compact(self, revision: int, *, physical: bool = False, timeout: float | None = None) -> int:
        """Compact the key space up to `revision` (etcd keeps no older versions); returns the
        cluster's revision. RevisionCompacted when it is compacted that far already."""
        req = pb.CompactionRequest(revision=revision, physical=physical)

        def call(ep: str, t: float) -> int:
            r = self._unary(ep, _KV + "Compact", req, pb.CompactionResponse, t, require_leader=True)
            return int(r.header.revision)

        return self._failover("compact", call, write=True, timeout=timeout)

    def lease_grant(self, ttl: int, *, id: int = 0, timeout: float | None = None) -> int:
        """Grant a lease of `ttl` seconds with the given id (0: etcd picks); returns its id. A lease
        with that id that exists already: EtcdRequestError `lease already exists`."""
        req = pb.LeaseGrantRequest(TTL=ttl, ID=id)

        def call(ep: str, t: float) -> int:
            r = self._unary(ep, _LEASE + "LeaseGrant", req, pb.LeaseGrantResponse, t, require_leader=True)
            if r.error:
                raise E.EtcdRequestError(f"lease grant on {ep}: {r.error}", endpoint=ep, details=r.error)
            return int(r.ID)

        return self._failover("lease grant", call, write=True, timeout=timeout)

    def lease_ttl(self, id: int, *, timeout: float | None = None) -> tuple[int, int]:
        """(seconds left, granted TTL) of a lease; (-1, 0) when it does not exist (expired or revoked)."""
        req = pb.LeaseTimeToLiveRequest(ID=id)

        def call(ep: str, t: float) -> tuple[int, int]:
            r = self._unary(
                ep, _LEASE + "LeaseTimeToLive", req, pb.LeaseTimeToLiveResponse, t, require_leader=True
            )
            return int(r.TTL), int(r.grantedTTL)

        return self._failover("lease ttl", call, write=False, timeout=timeout)

    def txn(
        self, ops: Sequence[TxnPut | TxnDelete], *, timeout: float | None = None, endpoint: str | None = None
    ) -> int:
        """The puts and deletes in ONE transaction with no compare (one revision for all of them);
        returns the cluster's revision after it. With `endpoint`, only that member is asked, without
        the pre-write probe (one round trip: a replay into a member nothing else writes to)."""
        req = _txn_request(ops, ())

        def call(ep: str, t: float) -> int:
            r = self._unary(ep, _KV + "Txn", req, pb.TxnResponse, t, require_leader=True)
            return int(r.header.revision)

        if endpoint is not None:
            t = timeout if timeout is not None else self.request_timeout
            return self._single("txn", endpoint, lambda: call(endpoint, t))
        return self._failover("txn", call, write=True, timeout=timeout)

    def txn_async(
        self,
        ops: Sequence[TxnPut | TxnDelete],
        *,
        endpoint: str,
        compare: Sequence[TxnCompare] = (),
        timeout: float | None = None,
    ) -> PendingTxn:
        """Send one transaction to one member and return at once (no failover, no probe): many can
        be in flight on one channel. etcd applies concurrent requests in no promised order, so a
        caller that needs an order makes each txn's `compare` hold only after its predecessor."""
        t = timeout if timeout is not None else self.request_timeout
        if endpoint not in self._targets:
            with self._lock:
                self._targets[endpoint] = _target(endpoint)
        req = _txn_request(ops, compare)
        call = self._channel(endpoint).unary_unary(
            _KV + "Txn", request_serializer=pb.TxnRequest.SerializeToString,
            response_deserializer=pb.TxnResponse.FromString,
        )  # fmt: skip
        return PendingTxn(self, endpoint, call.future(req, timeout=t, metadata=_REQUIRE_LEADER), t)

    # -- per-endpoint calls (no failover) --

    def watch(
        self,
        endpoint: str,
        start_revision: int,
        key: bytes | str = b"\0",
        range_end: bytes | str = b"\0",
        *,
        prev_kv: bool = True,
        progress_notify: bool = True,
        require_leader: bool = True,
    ) -> Watch:
        """Watch [key, range_end) (default: every key) on one member from `start_revision`, with
        each event's previous key-value (prev_kv). The stream carries etcd's `hasleader`: a member
        that loses its leader ends it (NoLeader) instead of going silent. require_leader=False
        watches a member without a leader too: it sends what it has applied (committed entries
        only), e.g. to read what the survivors of a quorum loss hold."""
        if endpoint not in self._targets:
            with self._lock:
                self._targets[endpoint] = _target(endpoint)
        create = pb.WatchCreateRequest(
            key=_b(key),
            range_end=_b(range_end),
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
        )
        return Watch(self, endpoint, create, require_leader=require_leader)

    def status(self, endpoint: str, *, timeout: float | None = None) -> EndpointStatus:
        """This member's status. Answers without quorum and on a learner."""
        t = timeout or self.request_timeout
        r = self._single(
            "status",
            endpoint,
            lambda: self._unary(endpoint, _MAINT + "Status", pb.StatusRequest(), pb.StatusResponse, t),
        )
        return EndpointStatus(
            endpoint=endpoint,
            member_id=int(r.header.member_id),
            leader=int(r.leader),
            raft_index=int(r.raftIndex),
            raft_applied_index=int(r.raftAppliedIndex),
            raft_term=int(r.raftTerm),
            revision=int(r.header.revision),
            version=r.version,
            db_size=int(r.dbSize),
            db_size_in_use=int(r.dbSizeInUse),
            is_learner=bool(r.isLearner),
            errors=tuple(r.errors),
            cluster_id=int(r.header.cluster_id),
        )

    def hash_kv(self, endpoint: str, revision: int = 0, *, timeout: float | None = None) -> HashKVResult:
        """Hash of the member's MVCC key space up to `revision` (0: latest). Equal hashes at one
        revision on all members mean their key spaces agree."""
        t = timeout or self.request_timeout
        r = self._single(
            "hash kv",
            endpoint,
            lambda: self._unary(
                endpoint, _MAINT + "HashKV", pb.HashKVRequest(revision=revision), pb.HashKVResponse, t
            ),
        )
        return HashKVResult(
            endpoint=endpoint,
            member_id=int(r.header.member_id),
            hash=int(r.hash),
            compact_revision=int(r.compact_revision),
            revision=int(r.header.revision),
            hash_revision=int(r.hash_revision),
        )

    def snapshot(
        self,
        endpoint: str,
        dest: Path | str,
        *,
        progress: Callable[[int], None] | None = None,
        timeout: float | None = 3600.0,
    ) -> SnapshotResult:
        """Stream the member's db to `dest`: written to `<dest>.part`, fsynced, renamed into place
        (and the directory fsynced), so `dest` is either absent or complete. Memory stays flat: gRPC's
        4 MiB window and the sink's 4 MiB pool, whatever the db's size. The trailing sha256 etcd
        sends is checked against the db bytes; a mismatch raises EtcdRequestError and leaves no file.
        `progress(bytes_so_far)` is called per chunk. A 3.4 learner refuses it
        (NotSupportedOnLearner); a 3.5 learner serves it."""
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        t0 = time.monotonic()

        def local_header() -> Any:
            return self._unary(
                endpoint,
                _KV + "Range",
                pb.RangeRequest(key=b"\0", count_only=True, serializable=True),
                pb.RangeResponse,
                self.request_timeout,
            ).header

        def stream() -> SnapshotResult:
            first = local_header()  # member and cluster ids (3.4 sends no header in the stream)
            before = int(first.revision)
            ch = self._channel(endpoint)
            # raw messages (no deserializer): the blob goes to the sink as a slice of the message,
            # without the two 32 KiB copies that parsing into a SnapshotResponse makes
            call = ch.unary_stream(
                _MAINT + "Snapshot", request_serializer=pb.SnapshotRequest.SerializeToString
            )
            header: Any = None
            sink = DbSink(part)
            try:
                responses = call(pb.SnapshotRequest(), timeout=timeout)
                try:
                    for raw in responses:
                        head, blob = snapshot_response_fields(raw)
                        if header is None and head is not None:
                            header = pb.ResponseHeader.FromString(head)
                        if blob:
                            sink.put(blob)
                            if progress is not None:
                                progress(sink.size)
                finally:
                    responses.cancel()
                ok, db_hash, tail = sink.finish()
            except BaseException:
                sink.abort()
                raise
            size = sink.size
            # The file is db bytes + etcd's 32-byte trailer: its sha256 continues the db's (one pass).
            file_hash = db_hash.copy()
            file_hash.update(tail)
            if not ok:
                part.unlink(missing_ok=True)
                raise E.EtcdRequestError(
                    f"snapshot from {endpoint}: sha256 check failed ({size} bytes received): discarded",
                    endpoint=endpoint,
                )
            os.replace(part, dest)
            fsync_dir(dest.parent)
            after = int(local_header().revision)
            h = header if header is not None and header.member_id else first
            return SnapshotResult(
                endpoint=endpoint,
                path=dest,
                size=size,
                sha256=file_hash.hexdigest(),
                db_sha256_ok=ok,
                member_id=int(h.member_id),
                cluster_id=int(h.cluster_id),
                revision=int(header.revision) if header is not None and header.revision else None,
                revision_bracket=(before, after),
                duration_s=time.monotonic() - t0,
            )

        try:
            return self._single("snapshot", endpoint, stream)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    # -- machinery --

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise E.EtcdError("etcd client is closed")
            ch = self._channels.get(endpoint)
            if ch is None:
                dial_ms = int(self.dial_timeout * 1000)
                target, name = self._targets[endpoint], self._server_names.get(endpoint)
                if self._dialer is not None and name is None:
                    member = self._via[endpoint] = _host_port(target)
                    local = self._dialer.forward(*member)
                    target, name = f"{local[0]}:{local[1]}", member[0]
                ch = grpc.secure_channel(
                    target,
                    self._creds,
                    options=[
                        # gRPC's connect timeout is max(min_reconnect_backoff, backoff): dial_timeout.
                        ("grpc.min_reconnect_backoff_ms", dial_ms),
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                        ("grpc.max_receive_message_length", 256 << 20),
                        ("grpc.max_send_message_length", 16 << 20),
                        ("grpc.keepalive_time_ms", 10_000),
                        ("grpc.keepalive_timeout_ms", dial_ms),
                        ("grpc.enable_retries", 0),  # retries are ours, with their own rules
                        # A unary-stream call (Snapshot) read on the calling thread, without gRPC's
                        # extra thread hand-off per message: the client's CPU for a 370 MB snapshot
                        # 1.8 s -> 1.45 s (etcdctl's: 1.4 s). Unary and bidi calls are unaffected.
                        ("SingleThreadedUnaryStream", 1),
                        # A fixed flow-control window: with BDP probing gRPC grew it while the reader
                        # lagged (a loaded machine) and held what etcd sent ahead in its heap: peak
                        # RSS of a 1.3 GB snapshot 131-383 MB, 100-119 MB with 4 MiB (README "Measured").
                        ("grpc.http2.bdp_probe", 0),
                        ("grpc.http2.lookahead_bytes", STREAM_WINDOW),
                        *([("grpc.ssl_target_name_override", name)] if name is not None else []),
                    ],
                )
                self._channels[endpoint] = ch
            return ch

    def _unary(
        self,
        endpoint: str,
        path: str,
        req: Any,
        resp_cls: Any,
        timeout: float,
        *,
        require_leader: bool = False,
    ) -> Any:
        call = self._channel(endpoint).unary_unary(
            path, request_serializer=type(req).SerializeToString, response_deserializer=resp_cls.FromString
        )
        return call(req, timeout=max(timeout, 0.001), metadata=_REQUIRE_LEADER if require_leader else None)

    def _classify(self, what: str, endpoint: str, e: grpc.RpcError, timeout: float | None) -> _Failure:
        code = e.code() if hasattr(e, "code") else None
        details = (e.details() if hasattr(e, "details") else "") or ""
        cls = E.error_class_for(details)
        if cls is not None:
            msg = f"{what} on {endpoint}: {details}"
            return _Failure(
                endpoint, details, cls(msg, endpoint=endpoint, details=details), answered=True, sent=True
            )
        via = self._via.get(endpoint)
        path = f" (through {self._dialer.where})" if via is not None and self._dialer is not None else ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            reason = (f"no answer within {timeout:.1f} s" if timeout else "deadline exceeded") + path
            err = E.EtcdTimeout(f"{what} on {endpoint}: {reason}", endpoint=endpoint, details=details)
            return _Failure(endpoint, reason, err, answered=False, sent=True)
        name = code.name if code is not None else "ERROR"
        reason = _transport_reason(name, details)
        why = self._dialer.why_not(*via) if self._dialer is not None and via is not None else None
        sent = not (code == grpc.StatusCode.UNAVAILABLE and any(s in details.lower() for s in _NOT_CONNECTED))
        if why:  # what the bastion said beats gRPC's "connection closed" on the local port
            reason, sent = why, False  # no channel to the member: nothing reached it
        else:
            reason += path
        if code == grpc.StatusCode.CANCELLED and self._closed:
            reason, sent = "client closed", True
        err = E.EtcdUnavailable(what, [(endpoint, reason)])
        return _Failure(endpoint, reason, err, answered=False, sent=sent)

    def _promote(self, ep: str) -> None:
        with self._lock:
            if self._order[0] != ep:
                self._order.remove(ep)
                self._order.insert(0, ep)

    def _demote(self, ep: str) -> None:
        with self._lock:
            if self._order[-1] != ep:
                self._order.remove(ep)
                self._order.append(ep)

    def _single(self, what: str, endpoint: str, fn: Callable[[], T]) -> T:
        if endpoint not in self._targets:
            # Per-endpoint calls may name any member (e.g. one just added), same TLS identity.
            target = _target(endpoint)
            with self._lock:
                self._targets[endpoint] = target
        try:
            return fn()
        except grpc.RpcError as e:
            raise self._classify(what, endpoint, e, None).error from None

    def _failover(self, what: str, fn: Callable[[str, float], T], *, write: bool, timeout: float | None) -> T:
        total = timeout or self.request_timeout
        deadline = time.monotonic() + total
        with self._lock:
            order = list(self._order)
        last: dict[str, _Failure] = {}  # each endpoint's latest failure
        rounds = 0
        while True:
            rounds += 1
            transient: list[str] = []
            for i, ep in enumerate(order):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ok, out = self._attempt(what, fn, ep, write, deadline, remaining, len(order) - i)
                if ok:
                    return out
                f: _Failure = out
                last[ep] = f
                if write:
                    if f.answered and not isinstance(f.error, _WRITE_RETRYABLE):
                        raise f.error from None
                    if not f.answered and f.sent:
                        if isinstance(f.error, E.EtcdTimeout):
                            raise E.EtcdTimeout(
                                f"{what} on {ep}: {f.reason}; outcome unknown (it may still be applied)",
                                endpoint=ep,
                            ) from None
                        raise E.EtcdUnavailable(
                            f"{what} (outcome unknown: it may have been applied)", [(ep, f.reason)]
                        )
                elif f.answered and not isinstance(f.error, _READ_RETRYABLE):
                    raise f.error from None
                # A learner stays a learner for the next round; no answer or no leader may pass.
                if not isinstance(f.error, E.NotSupportedOnLearner):
                    transient.append(ep)
            remaining = deadline - time.monotonic()
            pause = min(0.05 * 2**rounds, 0.5)
            if not transient or remaining <= pause:
                break
            time.sleep(pause)  # an election or a restart is often over within a few hundred ms
            order = transient
        reasons = [(ep, last[ep].reason) for ep in self.endpoints if ep in last]
        reasons += [
            (ep, f"not tried: {total:.1f} s deadline reached") for ep in self.endpoints if ep not in last
        ]
        tries = f" after {rounds} rounds" if rounds > 1 else ""
        answered = [f for f in last.values() if f.answered]
        if answered:
            err = answered[-1].error
            listed = "; ".join(f"{ep}: {why}" for ep, why in reasons)
            raise type(err)(
                f"{what}: every endpoint failed{tries} ({listed})", endpoint=err.endpoint, details=err.details
            ) from None
        raise E.EtcdUnavailable(what + tries, reasons)

    def _attempt(
        self,
        what: str,
        fn: Callable[[str, float], Any],
        ep: str,
        write: bool,
        deadline: float,
        remaining: float,
        left: int,
    ) -> tuple[bool, Any]:
        """One try on one endpoint: (True, result) or (False, its _Failure)."""
        # Reads share the time left so one hung member cannot eat the whole deadline; a write
        # gets all of it, since after a timeout it cannot safely be sent elsewhere.
        t = remaining if write or left == 1 else min(remaining, max(self.dial_timeout, remaining / left))
        try:
            if write:
                # Probe first, bounded by dial_timeout: a write goes only to a member that just
                # answered, so a hung member costs seconds, not an unknown outcome.
                probe_t = min(self.dial_timeout, t)
                try:
                    self._unary(ep, _MAINT + "Status", pb.StatusRequest(), pb.StatusResponse, probe_t)
                except grpc.RpcError as e:
                    raise _NotSent(e, probe_t) from None
            result = fn(ep, max(deadline - time.monotonic(), 0.001) if write else t)
        except _NotSent as ns:
            f = self._classify(what, ep, ns.error, ns.timeout)
            f.sent = False
        except grpc.RpcError as e:
            f = self._classify(what, ep, e, t)
        else:
            self._promote(ep)
            return True, result
        self._demote(ep)
        return False, f


def _b(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


def _transport_reason(code: str, details: str) -> str:
    """gRPC's 'failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:2379: Failed to
    connect to remote host: Connection refused' -> 'Failed to connect to remote host: Connection refused'."""
    if "last error:" in details:
        last = details.rsplit("last error:", 1)[1]
        last = re.sub(r"^\s*[A-Z_]+:\s*", "", last)  # status code
        last = re.sub(r"^(ipv4:|ipv6:)?\[?[0-9a-fA-F.:]+\]?:\d+:\s*", "", last)  # address
        return _short(last)
    return f"{code}: {_short(details)}"


def _short(details: str, limit: int = 200) -> str:
    d = " ".join(details.split())
    return d if len(d) <= limit else d[: limit - 3] + "..."
