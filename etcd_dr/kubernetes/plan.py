"""How `rke up` can succeed after etcd was recovered, decided before it runs. Pure.

Inputs: the recovered cluster's `ClusterState` (which members exist and answer), the inventory,
the operator's cluster.yml and the state file's currentState rkeConfig (what RKE compares the new
etcd plane against), and the PEM text of the client certificate etcd-dr reaches etcd with. Output:
a frozen `KubernetesDecision` with one sentence:

- SURVIVING_PLANE: a recovered voter is on a node of RKE's old etcd plane (masters lost, master3
  survived). cluster.yml keeps `etcd` on the recovered members only; the lost etcd nodes are
  removed from `nodes` (RKE would re-add them as members if they powered on during `rke up`) until
  `etcd-dr rejoin` brings them back and a second `rke up` lists them again.
- EXTERNAL_ETCD: no recovered member is in the old plane (all masters lost; node1 in the second
  site carries etcd). RKE refuses a new plane that does not overlap the old one, so no node keeps
  `etcd` and kube-apiserver is pointed at the recovered members as external etcd:
  `services.etcd.external_urls` = their client URLs, `ca_cert`/`cert`/`key` = the PEMs etcd-dr uses
  (which the recovered etcd accepts), `path: /registry`. RKE compares even an external plane with
  the state's currentState etcd hosts (cluster/reconcile.go isEtcdPlaneReplaced: an empty new
  plane deletes them all), so the state file `rke up` reads must list no etcd host:
  `rewrite_current_plane`.
- REFUSED: what `rke up` would answer, in RKE's words (rkemessages), and the fix.

`predict_rke_up()` is RKE's own checks on a cluster.yml, in RKE's order (cluster/validation.go
validateServicesOptions, cluster/hosts.go TunnelHosts + ValidateHostCount, cluster/reconcile.go
reconcileEtcd): the planner runs it on the operator's cluster.yml as it is (`as_is`: what would
happen without etcd-dr) and on its own result, which must pass.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from etcd_dr.inventory import Host, Inventory
from etcd_dr.kubernetes import rkemessages as msg
from etcd_dr.kubernetes import steps as K
from etcd_dr.kubernetes.rkefiles import ETCD_PATH_PREFIX, EtcdService, RkeConfig, RkeNode, RkeRole
from etcd_dr.plans import Plan, Refusal, Step
from etcd_dr.runtime import MemberParams
from etcd_dr.state import ClusterState, MemberState, Reach


class Decision(enum.StrEnum):
    SURVIVING_PLANE = "surviving-plane"
    EXTERNAL_ETCD = "external-etcd"
    REFUSED = "refused"


class RkeError(enum.StrEnum):
    """The errors `rke up` ends with that etcd-dr predicts: each value names its rkemessages constant."""

    NO_ETCD_PLANE = "NO_ETCD_PLANE"
    NO_ETCD_PLANE_UNREACHABLE = "NO_ETCD_PLANE_UNREACHABLE"
    INTERNAL_AND_EXTERNAL = "INTERNAL_AND_EXTERNAL"
    EXTERNAL_CA_EMPTY = "EXTERNAL_CA_EMPTY"
    EXTERNAL_CERT_EMPTY = "EXTERNAL_CERT_EMPTY"
    EXTERNAL_KEY_EMPTY = "EXTERNAL_KEY_EMPTY"
    EXTERNAL_PATH_EMPTY = "EXTERNAL_PATH_EMPTY"
    PLANE_REPLACED = "PLANE_REPLACED"
    REQUEST_TIMED_OUT = "REQUEST_TIMED_OUT"
    CLIENT_KEY_NOT_RSA = "CLIENT_KEY_NOT_RSA"

    def text(self, **fmt: str) -> str:
        """Its words (rkemessages), with the placeholders some have filled in."""
        words: str = getattr(msg, self.value)
        return words.format(**fmt) if fmt else words


@dataclass(frozen=True)
class RkePrediction:
    """What `rke up` ends with: which error, its exact words, and why it would."""

    error: RkeError
    message: str
    why: str

    @classmethod
    def of(cls, error: RkeError, why: str, **fmt: str) -> RkePrediction:
        return cls(error, error.text(**fmt), why)

    @property
    def constant(self) -> str:
        return self.error.value

    def to_json(self) -> dict:
        return {"constant": self.constant, "message": self.message, "why": self.why}


@dataclass(frozen=True, repr=False)
class ClientPem:
    """The etcd client certificate as PEM text (the inventory's etcd.client files). Never shown."""

    ca_cert: str
    cert: str
    key: str

    def __repr__(self) -> str:
        return "ClientPem(<ca_cert, cert, key>)"


@dataclass(frozen=True)
class NodeChange:
    """One cluster.yml node: its roles before and after (None: removed from nodes)."""

    index: int
    address: str
    name: str  # hostname_override
    before: tuple[str, ...]
    after: tuple[str, ...] | None

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "address": self.address,
            "name": self.name,
            "before": list(self.before),
            "after": list(self.after) if self.after is not None else None,
        }


@dataclass(frozen=True, repr=False)
class ExternalEtcd:
    urls: tuple[str, ...]
    path: str
    client: ClientPem

    def __repr__(self) -> str:
        return f"ExternalEtcd(urls={self.urls!r}, path={self.path!r})"

    def to_json(self) -> dict:
        # the key never leaves the process in a report; the certificates are public
        return {
            "urls": list(self.urls),
            "path": self.path,
            "ca_cert": "<PEM>",
            "cert": "<PEM>",
            "key": "<PEM>",
        }


@dataclass(frozen=True)
class KubernetesDecision:
    decision: Decision
    reason: str
    recovered: tuple[str, ...]  # the answering voters (inventory host names)
    old_plane: tuple[str, ...]  # currentState's etcd nodes (RKE addresses)
    nodes: tuple[NodeChange, ...] = ()  # the changes to cluster.yml's nodes (only those that change)
    external: ExternalEtcd | None = None
    drop_external: bool = False  # SURVIVING_PLANE: the user's external_urls etc. removed
    rewrite_current_plane: bool = False
    refusal: RkePrediction | None = None
    fix: str = ""
    as_is: RkePrediction | None = None  # `rke up` on the operator's cluster.yml unchanged

    @property
    def ok(self) -> bool:
        return self.decision is not Decision.REFUSED

    def to_json(self) -> dict:
        return {
            "decision": str(self.decision),
            "ok": self.ok,
            "reason": self.reason,
            "recovered": list(self.recovered),
            "old_plane": list(self.old_plane),
            "nodes": [n.to_json() for n in self.nodes],
            "external": self.external.to_json() if self.external else None,
            "drop_external": self.drop_external,
            "rewrite_current_plane": self.rewrite_current_plane,
            "refusal": self.refusal.to_json() if self.refusal else None,
            "fix": self.fix,
            "as_is": self.as_is.to_json() if self.as_is else None,
        }


# ---------------------------------------------------------------------------------------------
# RKE's checks


def predict_rke_up(
    cfg: RkeConfig,
    current: RkeConfig | None,
    inactive: Collection[str] = (),
    *,
    quorum: bool = True,
) -> RkePrediction | None:
    """What `rke up` with cluster.yml `cfg` and a state whose currentState is `current` fails with,
    or None. `inactive`: RKE addresses whose SSH tunnel fails (RKE drops them from the node lists);
    `quorum`: whether the etcd RKE talks to has one. RKE's order: services options, host count after
    the tunnels, the etcd plane's reconcile, member removal."""
    e = cfg.etcd
    if e.external:  # cluster/validation.go validateServicesOptions
        for error, value in (
            (RkeError.EXTERNAL_CA_EMPTY, e.ca_cert),
            (RkeError.EXTERNAL_CERT_EMPTY, e.cert),
            (RkeError.EXTERNAL_KEY_EMPTY, e.key),
            (RkeError.EXTERNAL_PATH_EMPTY, e.path),
        ):
            if not value:
                return RkePrediction.of(error, "services.etcd.external_urls without it")
        if (kind := _key_type(e.key)) is not None:
            return RkePrediction.of(
                RkeError.CLIENT_KEY_NOT_RSA,
                "pki/services.go type-asserts services.etcd.key to *rsa.PrivateKey: a Go panic",
                type=kind,
            )
    etcd = [n for n in cfg.etcd_nodes if n.address not in inactive]
    dropped = [n for n in cfg.nodes if n.address in inactive]
    if not etcd and not e.external:  # cluster/hosts.go TunnelHosts -> ValidateHostCount
        if dropped:  # its loop returns at the first inactive host, naming it only if it is etcd
            first = dropped[0]
            hosts = msg.go_list([first.address] if first.is_etcd else [])
            return RkePrediction.of(
                RkeError.NO_ETCD_PLANE_UNREACHABLE,
                f"every etcd node of cluster.yml is unreachable ({_and(n.address for n in cfg.etcd_nodes)})",
                hosts=hosts,
            )
        return RkePrediction.of(RkeError.NO_ETCD_PLANE, "no node has the etcd role and no external_urls")
    if etcd and e.external:
        return RkePrediction.of(
            RkeError.INTERNAL_AND_EXTERNAL,
            f"{_and(n.address for n in etcd)} keep the etcd role beside services.etcd.external_urls",
        )
    old = [n.address for n in current.etcd_nodes] if current is not None else []
    new = {n.address for n in etcd}
    # cluster/reconcile.go isEtcdPlaneReplaced (not reached without a currentState: a new cluster):
    # replaced unless both planes are empty, when every current etcd host is to be deleted (not in
    # the new plane, inactive or not; so also an empty old plane, external etcd, against a new
    # internal one) or the two share no host. Hosts are compared by address (hosts/hosts.go).
    if current is not None and (old or new) and all(a not in new for a in old):
        if not old:
            added = _and(sorted(new))
            why = f"the state's current etcd is external (no etcd node) and cluster.yml adds {added}"
        else:
            gone = (
                "with no etcd node" if not new else f"whose etcd nodes {_and(sorted(new))} are none of them"
            )
            why = f"the state's current etcd plane is {_and(old)} and cluster.yml {gone}"
        return RkePrediction.of(RkeError.PLANE_REPLACED, why)
    # deleteEtcdMembers: a member of the old plane no longer in cluster.yml (and reachable) is removed
    # through etcd, which cannot commit without quorum
    removed = [a for a in old if a not in new and a not in inactive]
    if removed and not quorum:
        return RkePrediction.of(
            RkeError.REQUEST_TIMED_OUT,
            f"RKE removes the etcd member(s) of {_and(removed)} through an etcd without quorum",
        )
    if not quorum:
        return RkePrediction.of(
            RkeError.REQUEST_TIMED_OUT,
            "etcd has no quorum: every write (and kube-apiserver's reads) times out",
        )
    return None


# ---------------------------------------------------------------------------------------------
# The decision


def plan_kubernetes(
    state: ClusterState,
    inv: Inventory,
    cfg: RkeConfig,
    current: RkeConfig | None,
    *,
    client: ClientPem | None = None,
) -> KubernetesDecision:
    """The cluster.yml change that lets `rke up` succeed on the recovered etcd, or why none does.
    Pure: the caller reads the files and observes the cluster."""
    # the voters etcd lists: cluster.yml's etcd plane follows them (a voter that is down but still a
    # member stays: RKE drops it while it is unreachable and removes nothing); they answer, quorum held
    members_m = [m for m in state.members if m.in_member_list and not m.is_learner]
    recovered = tuple(m.name for m in members_m if m.status is not None)
    old_plane = tuple(n.address for n in current.etcd_nodes) if current is not None else ()
    inactive = _inactive(state, inv, cfg)
    as_is = predict_rke_up(cfg, current, inactive, quorum=state.quorum)

    def refuse(reason: str, refusal: RkePrediction | None, fix: str) -> KubernetesDecision:
        return KubernetesDecision(
            Decision.REFUSED, reason, recovered, old_plane, refusal=refusal, fix=fix, as_is=as_is
        )

    if state.forked:
        return refuse(state.fork_advice, None, "resolve the fork first (etcd-dr status), then plan again")
    if not state.quorum:
        p = RkePrediction.of(
            RkeError.REQUEST_TIMED_OUT,
            "RKE removes the dead etcd members and kube-apiserver reads /registry through an etcd without "
            "quorum; the source incident waited minutes for this error",
        )
        return refuse(
            f"{state.verdict}: `rke up` would end in etcd's {msg.REQUEST_TIMED_OUT!r}",
            p,
            "recover etcd first (`etcd-dr recover`), then plan again",
        )
    on_nodes: list[tuple[MemberState, RkeNode]] = []
    off_rke: list[MemberState] = []
    for m in members_m:
        node = _node_of(m, inv, cfg)
        if node is None:
            off_rke.append(m)
        else:
            on_nodes.append((m, node))
    old = set(old_plane)
    overlap = [n for _, n in on_nodes if n.address in old]
    members = _and(recovered) or "none"
    plane = _and(old_plane) or "none (external or no state)"
    if overlap and not off_rke:
        keep = {n.address for _, n in on_nodes}
        changes = []
        for n in cfg.nodes:
            before = _roles(n)
            if n.is_etcd and n.address not in keep:
                # a lost etcd node: out of nodes (if it powers on during rke up RKE would add its old
                # member back); etcd-dr rejoin brings it back, then a second rke up lists it again
                after = None if n.address in old or not _other_roles(n) else _other_roles(n)
            elif not n.is_etcd and n.address in keep:
                after = (*before, RkeRole.ETCD.value)
            else:
                continue
            changes.append(NodeChange(n.index, n.address, n.hostname_override, before, after))
        changes, cp_note = _controlplane(
            cfg, changes, inactive, [n for m, n in on_nodes if m.status is not None]
        )
        if cp_note is None:
            return refuse(NO_CONTROLPLANE, None, NO_CONTROLPLANE_FIX)
        same = not changes and not cfg.etcd.external
        decision = KubernetesDecision(
            Decision.SURVIVING_PLANE,
            f"etcd ({members}) is RKE's etcd plane ({plane}) as it was: cluster.yml needs no change"
            if same
            else f"the recovered etcd ({members}) overlaps RKE's etcd plane ({plane}): cluster.yml keeps the "
            f"etcd role on {_and(sorted(keep))} only"
            + (
                f" and {_and(c.address for c in changes if c.after is None)} leave nodes until "
                "`etcd-dr rejoin` brings them back and a second `rke up` lists them again"
                if any(c.after is None for c in changes)
                else ""
            )
            + cp_note,
            recovered,
            old_plane,
            nodes=tuple(changes),
            drop_external=cfg.etcd.external,
            as_is=as_is,
        )
        return _checked(decision, cfg, current, inactive)
    # no overlap (or members RKE does not know): the recovered members as external etcd
    urls = tuple(_url(m, inv) for m in members_m)
    if client is None or not (client.ca_cert and client.cert and client.key):
        missing = next(
            e
            for e, v in (
                (RkeError.EXTERNAL_CA_EMPTY, client.ca_cert if client else ""),
                (RkeError.EXTERNAL_CERT_EMPTY, client.cert if client else ""),
                (RkeError.EXTERNAL_KEY_EMPTY, client.key if client else ""),
            )
            if not v
        )
        return refuse(
            "the recovered etcd is no part of RKE's etcd plane, so it must be external etcd, and its client "
            "certificate is not available",
            RkePrediction.of(missing, "services.etcd.external_urls without it"),
            "give the inventory's etcd.client files (ca_cert, cert, key: the PEMs etcd-dr reaches etcd with)",
        )
    if (kind := _key_type(client.key)) is not None:
        return refuse(
            "RKE reads services.etcd.key as an RSA key (pki/services.go GenerateExternalEtcdCertificates: "
            "clientKey.(*rsa.PrivateKey)) and the inventory's etcd.client key is not one",
            RkePrediction.of(RkeError.CLIENT_KEY_NOT_RSA, "a Go panic in rke up", type=kind),
            "point etcd.client at an RSA client certificate signed by kube-ca: the state file's kube-node "
            "(`etcd-dr inventory import-rke` writes it)",
        )
    changes = []
    for n in cfg.nodes:
        if n.is_etcd:
            after = _other_roles(n) or None  # a node with no role left is no node for RKE
            changes.append(NodeChange(n.index, n.address, n.hostname_override, _roles(n), after))
    changes, cp_note = _controlplane(cfg, changes, inactive, [n for m, n in on_nodes if m.status is not None])
    if cp_note is None:
        return refuse(NO_CONTROLPLANE, None, NO_CONTROLPLANE_FIX)
    why = (
        "no recovered etcd member is in RKE's etcd plane"
        if not overlap
        else "a recovered member is no RKE node"
    )
    decision = KubernetesDecision(
        Decision.EXTERNAL_ETCD,
        f"{why} (recovered {members}; plane {plane}) and RKE refuses a new plane that does not overlap "
        f"the old one, so no node keeps the etcd role and kube-apiserver reads the recovered etcd as "
        f"external etcd: {', '.join(urls)}, path {ETCD_PATH_PREFIX}, with etcd-dr's client certificate"
        + cp_note,
        recovered,
        old_plane,
        nodes=tuple(changes),
        external=ExternalEtcd(urls, ETCD_PATH_PREFIX, client),
        rewrite_current_plane=bool(old_plane),
        as_is=as_is,
    )
    return _checked(decision, cfg, current, inactive)


# RKE deploys no kube-apiserver when no controlplane host is left and does not say so (cluster.go
# returns early on an empty ControlPlaneHosts): `rke up` "succeeds" and the API answers nowhere.
NO_CONTROLPLANE = (
    "no controlplane node of cluster.yml answers and no recovered etcd member is on an RKE node: `rke up` "
    "would finish with kube-apiserver running nowhere (RKE skips an empty control plane without a word)"
)
NO_CONTROLPLANE_FIX = "give a live node the controlplane role in cluster.yml, then plan again"


def _controlplane(
    cfg: RkeConfig, changes: list[NodeChange], inactive: Collection[str], recovered: Sequence[RkeNode]
) -> tuple[list[NodeChange], str | None]:
    """A live controlplane node after the changes, or the recovered members' nodes given the role
    (kube-apiserver beside the etcd it reads: the source incident's second site). The sentence's
    tail, "" when nothing was needed, None when no node can take it."""
    by = {c.index: c for c in changes}

    def after(n: RkeNode) -> tuple[str, ...] | None:
        c = by.get(n.index)
        return c.after if c is not None else _roles(n)

    live = [
        n for n in cfg.nodes if n.address not in inactive and RkeRole.CONTROLPLANE.value in (after(n) or ())
    ]
    if live:
        return changes, ""
    if not recovered:
        return changes, None
    for n in recovered:
        roles = set(after(n) or ()) | {RkeRole.CONTROLPLANE.value}
        by[n.index] = NodeChange(
            n.index,
            n.address,
            n.hostname_override,
            _roles(n),
            tuple(r.value for r in RkeRole if r.value in roles),
        )
    dead = _and([n.address for n in cfg.controlplane_nodes]) or "none"
    names = _and([n.hostname_override for n in recovered])
    return sorted(by.values(), key=lambda c: c.index), (
        f"; no controlplane node answers ({dead}), so {names} {'takes' if len(recovered) == 1 else 'take'} "
        "the controlplane role: kube-apiserver runs beside the recovered etcd"
    )


def apply_to_config(cfg: RkeConfig, d: KubernetesDecision) -> RkeConfig:
    """cfg as the decision changes it (nodes' roles, services.etcd's external fields): what
    predict_rke_up checks and what clusteryml writes."""
    by_index = {c.index: c for c in d.nodes}
    nodes = []
    for n in cfg.nodes:
        c = by_index.get(n.index)
        if c is None:
            nodes.append(n)
        elif c.after is not None:
            nodes.append(dataclasses.replace(n, roles=frozenset(RkeRole(r) for r in c.after)))
    etcd = cfg.etcd
    if d.external is not None:
        x = d.external
        etcd = dataclasses.replace(
            etcd,
            external_urls=x.urls,
            ca_cert=x.client.ca_cert,
            cert=x.client.cert,
            key=x.client.key,
            path=x.path,
        )
    elif d.drop_external:
        etcd = dataclasses.replace(etcd, external_urls=(), ca_cert="", cert="", key="", path="")
    return dataclasses.replace(cfg, nodes=tuple(nodes), etcd=etcd)


def current_without_plane(current: RkeConfig | None) -> RkeConfig | None:
    """The state's currentState with no etcd host (what `rewrite_current_plane` writes)."""
    if current is None:
        return None
    nodes = tuple(
        dataclasses.replace(n, roles=n.roles - {RkeRole.ETCD})
        for n in current.nodes
        if n.roles - {RkeRole.ETCD}
    )
    return dataclasses.replace(current, nodes=nodes, etcd=EtcdService())


def _checked(
    d: KubernetesDecision, cfg: RkeConfig, current: RkeConfig | None, inactive: Collection[str]
) -> KubernetesDecision:
    """The decision's own cluster.yml must pass RKE's checks (a planner bug otherwise: say so)."""
    cur = current_without_plane(current) if d.rewrite_current_plane else current
    p = predict_rke_up(apply_to_config(cfg, d), cur, inactive)
    if p is None:
        return d
    return dataclasses.replace(
        d,
        decision=Decision.REFUSED,
        reason=f"{d.reason}; but `rke up` would still refuse that cluster.yml: {p.message} ({p.why})",
        refusal=p,
        fix="edit cluster.yml by hand; this case is not one etcd-dr knows how to decide",
    )


def _inactive(state: ClusterState, inv: Inventory, cfg: RkeConfig) -> frozenset[str]:
    """RKE addresses of nodes whose etcd host does not answer (RKE's SSH tunnel to it fails)."""
    out = set()
    for m in state.members:
        if m.status is not None or m.ssh is Reach.OK:
            continue
        host = inv.host(m.host) if m.host else None
        node = _node_for_host(host, cfg) if host else None
        if node is not None:
            out.add(node.address)
    return frozenset(out)


def _node_of(m: MemberState, inv: Inventory, cfg: RkeConfig) -> RkeNode | None:
    return _node_for_host(inv.host(m.host), cfg) if m.host else None


def _node_for_host(h: Host, cfg: RkeConfig) -> RkeNode | None:
    """The cluster.yml node of an inventory host: its address is RKE's internal_address (import-rke),
    its ssh_address RKE's address; else the same name."""
    for n in cfg.nodes:
        if n.internal_address == h.address or n.address == h.ssh_host:
            return n
    return next((n for n in cfg.nodes if n.hostname_override == h.name.lower()), None)


def _url(m: MemberState, inv: Inventory) -> str:
    return inv.client_url(inv.host(m.host)) if m.host else m.endpoint


def _roles(n: RkeNode) -> tuple[str, ...]:
    return tuple(r.value for r in RkeRole if r in n.roles)


def _other_roles(n: RkeNode) -> tuple[str, ...]:
    return tuple(r.value for r in RkeRole if r in n.roles and r is not RkeRole.ETCD)


def _key_type(pem: str) -> str | None:
    """The Go type pki/cert ParsePrivateKeyPEM gives a key that is not RSA (*ecdsa.PrivateKey,
    ed25519.PrivateKey), None for an RSA key or one it cannot read (RKE's parse error comes first)."""
    try:
        key = serialization.load_pem_private_key(
            pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "*ecdsa.PrivateKey"
    return "ed25519.PrivateKey" if isinstance(key, ed25519.Ed25519PrivateKey) else type(key).__name__


def _and(parts: Iterable[str]) -> str:
    items = list(parts)
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------------------------
# The steps that carry a decision out (etcd_dr.kubernetes.steps): `restore-kubernetes`'s plan

RETIRED_ETCD = "etcd-before-ssl-old"  # the member before etcd-on-ssl-old, kept (renamed, restart=no)


@dataclass(frozen=True)
class RestoreFiles:
    """The files `rke up` reads: the new cluster.yml and its state file on this machine (written
    by clusteryml.write_recovered beside the operator's), and the config's name on the deploy host
    (beside the operator's own there, never over it; RKE derives the state file's name from it)."""

    cluster_yml: str
    state_file: str
    config_name: str


def restore_plan(
    d: KubernetesDecision,
    state: ClusterState,
    inv: Inventory,
    cfg: RkeConfig,
    files: RestoreFiles,
    expected: Mapping[str, int],
    *,
    counted: str,
    diff: str = "",
) -> Plan:
    """The decision as steps: each recovered etcd host's certificates kept in ssl_old and etcd moved
    onto them (rke up regenerates /etc/kubernetes/ssl), the new cluster.yml and state file on the
    deploy host, `rke up` there, and the API checked on every live controlplane host against
    `expected` (objects per resource prefix; `counted` says where they come from). `diff`: the new
    cluster.yml's against the operator's, for the approver (params). Pure. A refused
    decision is a refused plan with the decision's sentence and fix."""
    if not d.ok:
        why = f"{d.reason}; {d.fix}" if d.fix else d.reason
        if d.refusal is not None:
            why = f"{why} (rke up would end in: {d.refusal.message})"
        return Plan("kubernetes", inv.cluster, why, refusal=Refusal.UNSAFE)
    if inv.rke is None:  # decide() read the files through it: a caller's mistake
        raise ValueError("restore_plan: the inventory has no rke: section")
    rke = inv.rke
    cert_dir = inv.etcd.cert_dir.rstrip("/")
    old_dir = f"{cert_dir}_old"
    etcd_hosts = [
        m.host
        for m in state.members
        if m.host and m.in_member_list and not m.is_learner and m.status is not None
    ]
    endpoints = tuple(inv.client_url(inv.host(h)) for h in etcd_hosts)
    steps: list[Step] = []
    for h in etcd_hosts:
        steps.append(
            Step(
                f"ssl-old:{h}",
                K.KubernetesAction.SSL_OLD,
                h,
                f"copy {cert_dir} to {old_dir} on {h}",
                f"{old_dir} on {h} is a complete copy of {cert_dir} (sha256 manifest)",
                "rke up regenerates the certificates in "
                f"{cert_dir}; the recovered etcd must keep reading the ones it runs with",
                params=K.SslOldParams(cert_dir, old_dir),
                runs=f"cp -a {cert_dir} {old_dir} (an existing {old_dir} renamed aside, never overwritten)",
            )
        )
    for h in etcd_hosts:
        steps.append(
            Step(
                f"etcd-on-ssl-old:{h}",
                K.KubernetesAction.ETCD_ON_SSL_OLD,
                h,
                f"restart etcd on {h} reading its certificates from {old_dir}",
                f"etcd on {h} runs with every certificate path under {old_dir}",
                "so that rke up replacing the files in "
                f"{cert_dir} cannot break the etcd it points kube-apiserver at",
                destructive=True,
                params=K.EtcdOnSslOldParams(
                    **MemberParams.fields_of(inv, inv.host(h)),
                    cert_dir=cert_dir,
                    old_dir=old_dir,
                    retired=RETIRED_ETCD,
                ),
                runs=f"stop etcd, rename it {RETIRED_ETCD} (restart=no), start a copy reading {old_dir}",
            )
        )
    deploy = rke.deploy_host
    steps.append(
        Step(
            "rke-files",
            K.KubernetesAction.RKE_FILES,
            deploy,
            f"upload {files.config_name} and its state file to {deploy}:{rke.remote_dir}",
            f"{deploy}:{rke.remote_dir} holds this {files.config_name} and its state file",
            f"rke up reads them on the deploy host ({d.decision}); the operator's own files there stay",
            params=K.RkeFilesParams(files.cluster_yml, files.state_file, rke.remote_dir, files.config_name),
        )
    )
    steps.append(
        Step(
            "rke-up",
            K.KubernetesAction.RKE_UP,
            deploy,
            f"run rke up --config {files.config_name} on {deploy}",
            f"rke up succeeded with this {files.config_name}",
            d.reason,
            destructive=True,
            params=K.RkeUpParams(rke.remote_dir, rke.binary, rke.up_timeout, files.config_name),
            runs=f"{rke.binary} up --config {files.config_name} in {rke.remote_dir} "
            f"(timeout {rke.up_timeout:g} s)",
        )
    )
    new = apply_to_config(cfg, d)
    inactive = _inactive(state, inv, cfg)
    cps = tuple(
        h.name
        for n in new.controlplane_nodes
        if n.address not in inactive and (h := _host_for_node(n, inv)) is not None
    )
    total = sum(expected.values())
    steps.append(
        Step(
            "api-check",
            K.KubernetesAction.API_CHECK,
            None,
            f"check /readyz on {_and(cps) or 'no host'} and the {total} objects under /registry",
            f"/readyz ok on {_and(cps) or 'no host'}; no resource prefix has fewer objects than {counted}",
            "Kubernetes is back only when its API answers with the objects it had",
            params=K.ApiCheckParams(cps, endpoints, dict(expected), ca_path=f"{cert_dir}/kube-ca.pem"),
        )
    )
    return Plan(
        "kubernetes",
        inv.cluster,
        f"{d.decision}: {d.reason}",
        tuple(steps),
        params={"decision": str(d.decision), "counted": counted, "controlplane": list(cps), "diff": diff},
    )


def _host_for_node(n: RkeNode, inv: Inventory) -> Host | None:
    """The inventory host of a cluster.yml node (the reverse of _node_for_host)."""
    for h in inv.hosts:
        if n.internal_address == h.address or n.address == h.ssh_host:
            return h
    return next((h for h in inv.hosts if h.name.lower() == n.hostname_override), None)
