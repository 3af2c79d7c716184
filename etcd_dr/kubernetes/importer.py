"""`etcd-dr inventory import-rke`: an inventory from RKE's own files, contacting nothing.

cluster.yml gives the hosts (RKE's `internal_address` is the inventory's `address`, where etcd
listens and what its certificates are named after; RKE's `address`, where SSH connects, becomes
`ssh_address` when it differs), SSH user, port and key, the roles, etcd's timings
(`services.etcd.extra_args`: heartbeat-interval, election-timeout; RKE's defaults 500/5000) and the
snapshot schedule where it maps. cluster.rkestate gives the certificates: kube-ca (certificate and
key, for `cert issue`), every etcd member's certificate and key, and the client certificate
etcd-dr uses, the one RKE itself uses: `kube-node` for RKE's own etcd (cluster/reconcile.go
reconcileEtcd passes Certificates[kube-node] to every etcd member add/remove), or
`kube-etcd-client` with `kube-etcd-client-ca` when the cluster already runs on external etcd
(cluster/plan.go: kube-apiserver's --etcd-certfile). They are written as files (keys 0600) under
the inventory's directory, and the inventory names them (`etcd.client`, `rke.certs_dir`).

Everything is checked before anything is written: the state file's certificates must be this
cluster's (a kube-etcd-<address> for every etcd node, signed by kube-ca, naming the node's address,
each with its key), the inventory must validate. A problem names the file, the field and the fix;
nothing is written then.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml
from cryptography import x509

from etcd_dr.certs import CertKeyPair, cert_sans, key_matches_cert, signed_by
from etcd_dr.errors import InputError
from etcd_dr.inventory import InventoryError, parse_inventory
from etcd_dr.kubernetes.rkefiles import (
    CA_CERT_NAME,
    ETCD_CLIENT_CA_CERT_NAME,
    ETCD_CLIENT_CERT_NAME,
    KUBE_NODE_CERT_NAME,
    CertificatePKI,
    FullState,
    RkeConfig,
    RkeFileError,
    RkeNode,
    RkeRole,
    read_cluster_yml,
    read_state_file,
    state_path_for,
)

CERTS_DIR = "rke-certs"
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")  # the inventory's Name
_RKE_HEARTBEAT, _RKE_ELECTION = 500, 5000  # cluster/defaults.go


@dataclass(frozen=True)
class ImportedHost:
    name: str
    address: str  # where etcd listens (RKE's internal_address)
    ssh_address: str | None  # RKE's address when it differs
    roles: tuple[str, ...]
    rke_node: int | None  # its index in cluster.yml's nodes, None: an external etcd endpoint

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "address": self.address,
            "ssh_address": self.ssh_address,
            "roles": list(self.roles),
            "rke_node": self.rke_node,
        }


@dataclass(frozen=True)
class ImportResult:
    inventory: Path
    cluster_yml: Path
    state_file: Path
    hosts: tuple[ImportedHost, ...]
    deploy_host: str
    deploy_host_why: str
    client_cert: str  # the bundle entry etcd-dr uses to reach etcd
    written: tuple[Path, ...]
    moved_aside: tuple[Path, ...]
    notes: tuple[str, ...] = field(default=())
    ok: bool = True

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "inventory": str(self.inventory),
            "cluster_yml": str(self.cluster_yml),
            "state_file": str(self.state_file),
            "hosts": [h.to_json() for h in self.hosts],
            "deploy_host": self.deploy_host,
            "deploy_host_why": self.deploy_host_why,
            "client_cert": self.client_cert,
            "written": [str(p) for p in self.written],
            "moved_aside": [str(p) for p in self.moved_aside],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ImportPlan:
    """What import_rke will write: the inventory's data and each file's bytes and mode."""

    data: dict
    files: tuple[tuple[Path, bytes, int], ...]
    hosts: tuple[ImportedHost, ...]
    deploy_host: str
    deploy_why: str
    client: str
    notes: tuple[str, ...]


def import_rke(
    cluster_yml: Path,
    *,
    state_file: Path | None = None,
    output: Path | None = None,
    deploy_host: str | None = None,
    known_hosts: Path | None = None,
    ignore_bastion: bool = False,
    now: dt.datetime | None = None,
) -> ImportResult:
    """Read RKE's files, check them, write the inventory and the certificate files. Contacts
    nothing. RkeFileError / InputError (nothing written) when the files cannot make an inventory.
    `output`: the inventory's path (default: etcd-dr/inventory.yaml beside cluster.yml; an existing
    file is never overwritten); the certificates go to rke-certs/ beside it."""
    cluster_yml = Path(cluster_yml).expanduser().absolute()
    state_path = Path(state_file).expanduser().absolute() if state_file else state_path_for(cluster_yml)
    out = (
        Path(output).expanduser().absolute() if output else cluster_yml.parent / "etcd-dr" / "inventory.yaml"
    )
    if out.exists():
        raise InputError(
            f"{out}: already exists; etcd-dr never overwrites an inventory: pass -o with a new path "
            "(or move this one aside first)"
        )
    cfg = read_cluster_yml(cluster_yml)
    state = read_state_file(state_path)
    plan = plan_import(
        cfg,
        state,
        cluster_yml=cluster_yml,
        inventory=out,
        deploy_host=deploy_host,
        known_hosts=known_hosts,
        ignore_bastion=ignore_bastion,
    )
    written: list[Path] = []
    moved: list[Path] = []
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    for path, data, mode in plan.files:
        aside = write_beside(path, data, mode, stamp)
        written.append(path)
        if aside is not None:
            moved.append(aside)
    header = (
        f"# etcd-dr inventory imported from RKE's {cluster_yml.name} and {state_path.name} by "
        "`etcd-dr inventory import-rke`;\n# check it with `etcd-dr inventory check -i "
        f"{out}`\n"
    )
    text = header + yaml.dump(plan.data, Dumper=_Dumper, sort_keys=False)
    write_beside(out, text.encode(), 0o644, stamp)
    written.append(out)
    return ImportResult(
        inventory=out,
        cluster_yml=cluster_yml,
        state_file=state_path,
        hosts=plan.hosts,
        deploy_host=plan.deploy_host,
        deploy_host_why=plan.deploy_why,
        client_cert=plan.client,
        written=tuple(written),
        moved_aside=tuple(moved),
        notes=plan.notes,
    )


def plan_import(
    cfg: RkeConfig,
    state: FullState,
    *,
    cluster_yml: Path,
    inventory: Path,
    deploy_host: str | None = None,
    known_hosts: Path | None = None,
    ignore_bastion: bool = False,
) -> ImportPlan:
    """Pure: the inventory data and the files, from the parsed files. RkeFileError with every problem."""
    yml_problems: list[str] = []
    state_problems: list[str] = []
    notes: list[str] = []
    if not cfg.nodes:
        yml_problems.append("nodes: no node; RKE's cluster.yml lists the cluster's nodes")
    bastion = _bastion(cfg, yml_problems, notes) if cfg.bastion is not None and not ignore_bastion else None
    if cfg.bastion is not None and ignore_bastion:
        notes.append(
            f"bastion_host {cfg.bastion.address} ignored (--ignore-bastion): etcd-dr connects to the nodes "
            "directly from where it runs"
        )
    keys = {n.ssh_key_path for n in cfg.nodes if n.ssh_key_path and n.ssh_key_path != cfg.ssh_key_path}
    for n in cfg.nodes:
        if n.has_inline_ssh_key:
            yml_problems.append(
                f"nodes[{n.index}].ssh_key: an inline key; etcd-dr reads the SSH key from a file: save it "
                "(mode 0600) and give its path in ssh_key_path instead"
            )
        elif n.ssh_key_path in keys:
            yml_problems.append(
                f"nodes[{n.index}].ssh_key_path: {n.ssh_key_path!r} differs from the cluster's ssh_key_path "
                f"({cfg.ssh_key_path!r}); an etcd-dr inventory has one SSH key for all hosts: load both into "
                "an ssh-agent and set ssh_agent_auth: true, or use one key"
            )

    # the hosts
    hosts: list[ImportedHost] = []
    names: Counter[str] = Counter()
    for n in cfg.nodes:
        name = n.hostname_override if _NAME_RE.match(n.hostname_override) else _safe(n.internal_address)
        names[name] += 1
        roles = [r for r in ("etcd", "controlplane", "worker") if RkeRole(r) in n.roles]
        ssh = n.address if n.address != n.internal_address else None
        hosts.append(ImportedHost(name, n.internal_address, ssh, tuple(roles), n.index))
    for name, count in names.items():
        if count > 1:
            yml_problems.append(
                f"nodes: {count} nodes are named {name!r} (hostname_override, else the address); give each "
                "its own hostname_override"
            )
    client_port = 2379
    if cfg.etcd.external:
        by_addr = {h.address: i for i, h in enumerate(hosts)}
        ports = set()
        for j, url in enumerate(cfg.etcd.external_urls):
            u = urlparse(url)
            if u.scheme != "https" or not u.hostname:
                yml_problems.append(
                    f"services.etcd.external_urls[{j}]: {url!r} is not an https:// URL; etcd-dr reaches "
                    "etcd over TLS only"
                )
                continue
            ports.add(u.port or 2379)
            if u.hostname in by_addr:  # an etcd on a node (after a recovery onto it)
                h = hosts[by_addr[u.hostname]]
                hosts[by_addr[u.hostname]] = ImportedHost(
                    h.name, h.address, h.ssh_address, ("etcd", *h.roles), h.rke_node
                )
            else:
                hosts.append(ImportedHost(_safe(u.hostname), u.hostname, None, ("etcd",), None))
                notes.append(
                    f"{_safe(u.hostname)}: an external etcd endpoint ({url}) that is no RKE node; its SSH "
                    "user and port are the inventory's defaults and its etcd is taken to run as RKE's "
                    "container `etcd`: correct hosts[] and etcd.runtime if not"
                )
        if len(ports) > 1:
            yml_problems.append(
                "services.etcd.external_urls: the endpoints use different ports; the inventory has one "
                "etcd.client_port"
            )
        client_port = next(iter(ports), 2379)
    elif not cfg.etcd_nodes:
        yml_problems.append(
            "nodes: no node has the role etcd and services.etcd.external_urls is empty; RKE refuses this "
            'cluster.yml too ("Cluster must have at least one etcd plane host"): give the etcd nodes'
        )

    # the certificates (currentState: what `rke up` deployed on the hosts)
    where = "currentState"
    bundle = state.current.certificates
    if not bundle:
        where, bundle = "desiredState", state.desired.certificates
        notes.append(
            "the state file's currentState has no certificates (no `rke up` finished): desiredState's used"
        )
    files: list[tuple[Path, bytes, int]] = []
    certs_dir = inventory.parent / CERTS_DIR

    def pair(name: str, *, need_key: bool, why: str) -> CertificatePKI | None:
        at = f"{where}.certificatesBundle.{name}"
        c = bundle.get(name)
        if c is None:
            state_problems.append(
                f"{at}: missing ({why}); this state file is not this cluster's, or it predates the node: "
                "pass the cluster.rkestate `rke up` last wrote for this cluster.yml (--state)"
            )
            return None
        if not c.certificate_pem.strip():
            state_problems.append(
                f"{at}.certificatePEM: is empty ({why}); restore the state file from a backup"
            )
            return None
        if need_key and not c.key_pem.strip():
            state_problems.append(f"{at}.keyPEM: is empty ({why}); restore the state file from a backup")
            return None
        try:
            cp = CertKeyPair(c.certificate_pem.encode(), c.key_pem.encode())
            cp.certificate()
        except ValueError:
            state_problems.append(f"{at}.certificatePEM: is not a PEM certificate; restore the state file")
            return None
        if need_key:
            try:
                ok = key_matches_cert(cp)
            except InputError:
                ok = False
            if not ok:
                state_problems.append(
                    f"{at}.keyPEM: does not belong to its certificatePEM; restore the state file"
                )
                return None
        return c

    ca = pair(CA_CERT_NAME, need_key=True, why="the cluster CA, kube-ca")
    ca_cert = CertKeyPair(ca.certificate_pem.encode(), b"").certificate() if ca else None

    def write_pair(c: CertificatePKI, *, key: bool = True) -> tuple[Path, Path | None]:
        cert_path = certs_dir / f"{c.bundle_name}.pem"
        files.append((cert_path, c.certificate_pem.encode(), 0o644))
        if not key:
            return cert_path, None
        key_path = certs_dir / f"{c.bundle_name}-key.pem"
        files.append((key_path, c.key_pem.encode(), 0o600))
        return cert_path, key_path

    if ca is not None:
        ca_path, _ = write_pair(ca)
    for n in cfg.etcd_nodes:
        c = pair(
            n.etcd_cert_name, need_key=True, why=f"the etcd certificate of nodes[{n.index}], {n.address}"
        )
        if c is None:
            continue
        _check_member(c, n, ca_cert, f"{where}.certificatesBundle.{c.bundle_name}", state_problems)
        write_pair(c)
    # etcd members named in the state that cluster.yml no longer lists: RKE will remove them
    wanted = {n.etcd_cert_name for n in cfg.etcd_nodes}
    stale = sorted(k for k in bundle if k.startswith("kube-etcd-") and k not in wanted and "client" not in k)
    if stale:
        notes.append(
            f"{where}.certificatesBundle has etcd certificates of nodes cluster.yml no longer lists as etcd: "
            f"{', '.join(stale)} (RKE removes those members at the next `rke up`)"
        )
    if cfg.etcd.external:
        client = pair(ETCD_CLIENT_CERT_NAME, need_key=True, why="the external etcd's client certificate")
        client_ca = pair(ETCD_CLIENT_CA_CERT_NAME, need_key=False, why="the external etcd's CA")
        client_name = ETCD_CLIENT_CERT_NAME
    else:
        client = pair(KUBE_NODE_CERT_NAME, need_key=True, why="the certificate RKE reaches etcd with")
        client_ca, client_name = ca, KUBE_NODE_CERT_NAME
        node_cert = CertKeyPair(client.certificate_pem.encode(), b"") if client is not None else None
        if node_cert is not None and ca_cert is not None and not signed_by(node_cert.certificate(), ca_cert):
            state_problems.append(
                f"{where}.certificatesBundle.kube-node.certificatePEM: is not signed by kube-ca; etcd "
                "would refuse it: restore the state file from a backup"
            )
    client_paths = write_pair(client) if client is not None else None
    client_ca_path = None
    if client_ca is not None:
        client_ca_path = ca_path if client_ca is ca else write_pair(client_ca, key=False)[0]

    # the deploy host: where `rke up` runs
    deploy, why = _deploy_host(cfg, hosts, deploy_host, yml_problems)

    if yml_problems or state_problems:
        raise RkeFileError(
            f"{cluster_yml} and {state.source}",
            [f"{cluster_yml.name}: {p}" for p in yml_problems]
            + [f"{state.source.name}: {p}" for p in state_problems],
        )
    assert client_paths is not None and client_paths[1] is not None and client_ca_path is not None

    # the inventory
    users = Counter(n.user for n in cfg.nodes)
    ports = Counter(n.port for n in cfg.nodes)
    user, port = users.most_common(1)[0][0], ports.most_common(1)[0][0]
    prefix = cfg.raw.get("prefix_path") or "/"
    host_dicts = []
    for h in hosts:
        d: dict = {"name": h.name, "address": h.address}
        if h.ssh_address:
            d["ssh_address"] = h.ssh_address
        d["roles"] = list(h.roles)
        if h.rke_node is not None:
            node = cfg.nodes[h.rke_node]
            if node.user != user:
                d["user"] = node.user
            if node.port != port:
                d["port"] = node.port
        host_dicts.append(d)
    ssh: dict = {
        "user": user,
        "port": port,
        "known_hosts": str(Path(known_hosts).expanduser()) if known_hosts else "~/.ssh/known_hosts",
    }
    if cfg.ssh_agent_auth:
        ssh["agent"] = True
    else:
        ssh["key_file"] = cfg.ssh_key_path
    hb, el, timing_notes = _timings(cfg)
    notes += timing_notes
    etcd: dict = {
        "runtime": "docker",
        "container": "etcd",
        "client_port": client_port,
        "heartbeat_interval": hb,
        "election_timeout": el,
        "client": {
            "ca_cert": _rel(client_ca_path, inventory.parent),
            "cert": _rel(client_paths[0], inventory.parent),
            "key": _rel(client_paths[1], inventory.parent),
        },
    }
    image = cfg.etcd.image or (state.current.rke_config.etcd.image if state.current.rke_config else "")
    if image:
        etcd["image"] = image
    if prefix not in ("", "/"):  # RKE puts /var/lib/etcd and /etc/kubernetes under prefix_path
        etcd["data_dir"] = str(Path(prefix) / "var/lib/etcd")
        etcd["cert_dir"] = str(Path(prefix) / "etc/kubernetes/ssl")
    data: dict = {
        "cluster": _safe(cfg.cluster_name or "local"),
        "ssh": ssh,
        "etcd": etcd,
    }
    snaps, snap_notes = _snapshots(cfg)
    notes += snap_notes
    if snaps:
        data["snapshots"] = snaps
    rke: dict = {"cluster_yml": _rel(cluster_yml, inventory.parent), "deploy_host": deploy}
    if state.source != state_path_for(cluster_yml):
        rke["state_file"] = _rel(state.source, inventory.parent)
    rke["certs_dir"] = CERTS_DIR
    data["rke"] = rke
    if bastion is not None:
        data["bastion"] = bastion
    data["hosts"] = host_dicts
    try:
        parse_inventory(data, inventory.parent, inventory, check_files=False)
    except InventoryError as e:
        raise RkeFileError(
            inventory, [f"the inventory made from it would not load: {p}" for p in e.problems]
        ) from None
    for what, p in (("ssh.known_hosts", ssh["known_hosts"]), ("ssh.key_file", ssh.get("key_file"))):
        if p and not Path(p).expanduser().exists():
            notes.append(
                f"{what}: {p} does not exist on this machine yet; "
                + (
                    "collect each host's key (ssh-keyscan), verify it on the host's console, then list it "
                    "there (--known-hosts names another file)"
                    if what == "ssh.known_hosts"
                    else "put the private key RKE logs in with there"
                )
            )
    notes.append(
        f"kube-ca's key is in {CERTS_DIR}/kube-ca-key.pem: `etcd-dr cert issue` reads the CA over SSH, so "
        f"copy it (mode 0600) to {hosts[0].name if hosts else 'a master'}:/etc/kubernetes/ssl/"
        "kube-ca-key.pem or point the inventory's ca: at where it is"
    )
    return ImportPlan(data, tuple(files), tuple(hosts), deploy, why, client_name, tuple(notes))


def _check_member(
    c: CertificatePKI, n: RkeNode, ca_cert: x509.Certificate | None, at: str, problems: list[str]
) -> None:
    """A member certificate RKE deployed for this node: signed by kube-ca, naming its address."""
    cert = CertKeyPair(c.certificate_pem.encode(), b"").certificate()
    if ca_cert is not None and not signed_by(cert, ca_cert):
        problems.append(
            f"{at}.certificatePEM: is not signed by this state file's kube-ca; the bundle is mixed from two "
            "clusters: restore the state file from a backup"
        )
        return
    ips, dns = cert_sans(cert)
    try:
        want = ipaddress.ip_address(n.internal_address).compressed
        named = want in ips
    except ValueError:
        want, named = n.internal_address.lower(), n.internal_address.lower() in dns
    if not named:
        problems.append(
            f"{at}.certificatePEM: does not name {want} (nodes[{n.index}]'s address; it names "
            f"{', '.join(sorted(ips | dns)) or 'nothing'}); the state file is another cluster's or older "
            "than this cluster.yml: pass the matching cluster.rkestate (--state)"
        )


def _bastion(cfg: RkeConfig, problems: list[str], notes: list[str]) -> dict | None:
    """The inventory's `bastion:` from RKE's bastion_host (RKE's defaults: port 22, the cluster's
    ssh_key_path and ssh_agent_auth; cluster/defaults.go setClusterDefaults). Every SSH and etcd
    connection goes through it; its key must be in ssh.known_hosts."""
    b = cfg.bastion
    assert b is not None
    at = "bastion_host"
    if not b.user:
        problems.append(f"{at}.user: is missing; RKE logs in to the bastion as this user: give it")
    if b.has_inline_ssh_key:
        problems.append(
            f"{at}.ssh_key: an inline key; etcd-dr reads the SSH key from a file: save it (mode 0600) "
            "and give its path in ssh_key_path instead"
        )
    if b.has_ssh_cert:
        problems.append(
            f"{at}.ssh_cert_path: etcd-dr logs in with a key, not an SSH certificate; authorize the "
            "key itself on the bastion (authorized_keys) and remove ssh_cert/ssh_cert_path"
        )
    if not b.user or b.has_inline_ssh_key or b.has_ssh_cert:
        return None
    d: dict = {"address": b.address}
    if b.port != 22:
        d["port"] = b.port
    d["user"] = b.user
    if b.ssh_key_path and b.ssh_key_path != cfg.ssh_key_path and not cfg.ssh_agent_auth:
        d["key_file"] = b.ssh_key_path
    notes.append(
        f"bastion_host {b.address}:{b.port}: every SSH connection and etcd's client port are reached "
        "through it; list its host key in ssh.known_hosts as well"
    )
    return d


def _deploy_host(
    cfg: RkeConfig, hosts: Sequence[ImportedHost], asked: str | None, problems: list[str]
) -> tuple[str, str]:
    names = [h.name for h in hosts]
    if asked is not None:
        if asked not in names:
            problems.append(
                f"--deploy-host: {asked!r} is not a host of this cluster; name one of {', '.join(names)}"
            )
            return asked, ""
        return asked, f"{asked}: given with --deploy-host"
    by_node = {h.rke_node: h for h in hosts if h.rke_node is not None}
    worker = next((n for n in cfg.nodes if not n.is_etcd and not n.is_controlplane), None)
    if worker is not None:
        h = by_node[worker.index]
        return h.name, (
            f"{h.name}: the first node with neither etcd nor controlplane; a worker outlives the loss of "
            "the masters this is for (the source incident ran `rke up` from node2, a worker); "
            "--deploy-host picks another"
        )
    if cfg.controlplane_nodes:
        h = by_node[cfg.controlplane_nodes[0].index]
        return (
            h.name,
            f"{h.name}: the first controlplane node (no worker-only node); --deploy-host picks another",
        )
    h = hosts[0] if hosts else None
    return (h.name if h else ""), "the first node; --deploy-host picks another"


def _timings(cfg: RkeConfig) -> tuple[int, int, list[str]]:
    notes: list[str] = []
    out = []
    for flag, default in (("heartbeat-interval", _RKE_HEARTBEAT), ("election-timeout", _RKE_ELECTION)):
        v = cfg.etcd.extra_args.get(flag)
        if v is None:
            out.append(default)
        elif v.isdigit() and int(v) > 0:
            out.append(int(v))
        else:
            notes.append(
                f"services.etcd.extra_args.{flag}: {v!r} is not milliseconds; RKE's default {default} used"
            )
            out.append(default)
    return out[0], out[1], notes


def _snapshots(cfg: RkeConfig) -> tuple[dict | None, list[str]]:
    """RKE's recurring snapshots (services.etcd.snapshot, creation, retention) as etcd-dr's
    retention: keep_last = retention / creation (the snapshots RKE keeps at any time), keep_daily the
    days retention covers. RKE's own snapshots stay on the etcd hosts; etcd-dr's go to snapshots.dir."""
    e = cfg.etcd
    if not e.snapshot:
        return None, []
    creation, retention = _hours(e.creation or "12h"), _hours(e.retention or "72h")
    if creation is None or retention is None or creation <= 0:
        return None, [
            f"services.etcd.creation/retention: {e.creation!r}/{e.retention!r} are not Go durations in "
            "hours or minutes; snapshots: left at etcd-dr's defaults"
        ]
    keep_last = max(1, int(retention // creation))
    keep_daily = max(0, int(-(-retention // 24)))
    return {"dir": "snapshots", "keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": 0}, [
        f"snapshots: RKE takes one every {e.creation or '12h'} and keeps {e.retention or '72h'}; etcd-dr "
        f"keeps the newest {keep_last} and the newest of each of the last {keep_daily} days (UTC), in "
        "snapshots/ on this machine"
    ]


def _hours(s: str) -> float | None:
    """A Go duration made of h/m/s parts ("12h", "1h30m") in hours."""
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", s.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, se = (float(x) if x else 0.0 for x in m.groups())
    return h + mi / 60 + se / 3600


class _Dumper(yaml.SafeDumper):
    """Lists of plain values in flow style, as the README's inventory writes them: roles: [etcd]."""


def _list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, str | int) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-._")[:63] or "host"


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(p, base)
    except ValueError:
        return str(p)


def write_beside(path: Path, data: bytes, mode: int, stamp: str) -> Path | None:
    """Write data to path atomically with mode (created with it: a key is never readable by others,
    even for a moment). A different file already there is moved aside to <name>.bak-<stamp>, never
    deleted; the same bytes: left as it is. Returns where the old file went, if moved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if path.exists():
        if path.read_bytes() == data:
            os.chmod(path, mode)
            return None
        aside = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        os.replace(path, aside)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return aside
