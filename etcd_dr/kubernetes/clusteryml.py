"""The cluster.yml that `rke up` can succeed with, from a decision, written beside the operator's.

`render()` is pure: the operator's cluster.yml text in, the new text and a unified diff out. Only
what the decision changes is changed (nodes removed or their `role` lists edited; under
services.etcd: external_urls, ca_cert, cert, key, path set, or removed for a surviving plane);
ruamel.yaml's round trip keeps every other setting and comment as written. The new text is read
back as RKE reads it and must equal the decision applied to the old (etcd_dr.kubernetes.plan
apply_to_config), with every other key untouched, or nothing is written. The diff shows the
external etcd's client key as a placeholder: it goes to the file, never to a screen or a log.

`write_recovered()` puts beside it what `rke up --config <new>` reads (cluster/state.go: the state
file is the config's path with .rkestate; kube_config_<config name>): a copy of the state file
(currentState without its etcd plane when the decision says so, else RKE refuses an external etcd
as a replaced plane) and of the kube config. Files it would replace are moved aside, never deleted.
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from etcd_dr.errors import InputError
from etcd_dr.kubernetes.importer import write_beside
from etcd_dr.kubernetes.plan import Decision, KubernetesDecision, apply_to_config
from etcd_dr.kubernetes.rkefiles import RkeConfig, RkeRole, Style, parse_rke_config, state_path_for

KEY_PLACEHOLDER = "<the client key (PEM): in the file, never shown>"
_ETCD_EXTERNAL = ("external_urls", "ca_cert", "cert", "key", "path")


@dataclass(frozen=True)
class Rendered:
    text: str
    diff: str  # with the client key as KEY_PLACEHOLDER


@dataclass(frozen=True)
class Written:
    cluster_yml: Path
    state_file: Path
    kube_config: Path | None
    moved_aside: tuple[Path, ...]
    diff: str
    decision: KubernetesDecision

    def to_json(self) -> dict:
        return {
            "ok": True,
            "cluster_yml": str(self.cluster_yml),
            "state_file": str(self.state_file),
            "kube_config": str(self.kube_config) if self.kube_config else None,
            "moved_aside": [str(p) for p in self.moved_aside],
            "diff": self.diff,
            "decision": self.decision.to_json(),
        }


def recovered_path(cluster_yml: Path) -> Path:
    """cluster.yml -> cluster.recovered.yml (the same extension: RKE derives its state file's name)."""
    return cluster_yml.with_name(f"{cluster_yml.stem}.recovered{cluster_yml.suffix or '.yml'}")


def render(text: str, cfg: RkeConfig, d: KubernetesDecision, *, name: str = "cluster.yml") -> Rendered:
    """The operator's cluster.yml with the decision applied. Pure. InputError when the decision
    refused or the file's layout cannot take the change in place (nothing to write then)."""
    if d.decision is Decision.REFUSED:
        raise InputError(f"no cluster.yml to write: {d.reason}; {d.fix}")
    new = _edit(text, d, redact=False, name=name)
    shown = _edit(text, d, redact=True, name=name)
    _verify(text, new, cfg, d, name)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            shown.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{recovered_path(Path(name)).name}",
        )
    )
    return Rendered(new, diff)


def _yaml(text: str) -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never fold a long line the operator wrote on one
    # the sequence indentation the file uses (`nodes:\n  - address` or `nodes:\n- address`)
    m = re.search(r"^( *)\S[^\n]*:\s*\n( *)- ", text, re.M)
    if m:
        offset = len(m.group(2)) - len(m.group(1))
        y.indent(mapping=2, sequence=offset + 2, offset=offset)
    return y


def _edit(text: str, d: KubernetesDecision, *, redact: bool, name: str) -> str:
    y = _yaml(text)
    try:
        doc = y.load(text)
    except YAMLError as e:
        raise InputError(f"{name}: not valid YAML ({e.__class__.__name__}); fix it first") from None
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("nodes"), CommentedSeq):
        raise InputError(f"{name}: nodes: is not a list of nodes; RKE's cluster.yml lists them under nodes:")
    nodes: CommentedSeq = doc["nodes"]
    by_index = {c.index: c for c in d.nodes}
    for i in sorted(by_index, reverse=True):  # from the end: indexes stay valid
        c = by_index[i]
        if c.after is None:
            del nodes[i]
            continue
        roles = nodes[i].get("role")
        if not isinstance(roles, CommentedSeq):
            raise InputError(f"{name}: nodes[{i}].role: is not a list; write e.g. role: [controlplane]")
        del roles[:]
        roles.extend(c.after)  # in place: a flow list stays [a, b], a block list stays a block
    services = doc.get("services")
    if d.external is not None or d.drop_external:
        if services is None:
            doc["services"] = services = CommentedMap()
        etcd = services.get("etcd")
        if etcd is None:
            services["etcd"] = etcd = CommentedMap()
        if d.external is not None:
            x = d.external
            etcd["path"] = x.path
            urls = CommentedSeq(x.urls)
            etcd["external_urls"] = urls
            etcd["ca_cert"] = LiteralScalarString(x.client.ca_cert.strip() + "\n")
            etcd["cert"] = LiteralScalarString(x.client.cert.strip() + "\n")
            etcd["key"] = LiteralScalarString((KEY_PLACEHOLDER if redact else x.client.key.strip()) + "\n")
        else:
            for k in _ETCD_EXTERNAL:
                etcd.pop(k, None)
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue()


def _verify(old: str, new: str, cfg: RkeConfig, d: KubernetesDecision, name: str) -> None:
    """The new text, read as RKE reads it, is the decision applied; nothing else changed."""
    before, after = yaml.safe_load(old), yaml.safe_load(new)
    problems: list[str] = []
    got = parse_rke_config(after, Style.YAML, "", problems)
    want = apply_to_config(cfg, d)
    same = got is not None and not problems
    if same and got is not None:
        same = [(n.address, n.roles) for n in got.nodes] == [(n.address, n.roles) for n in want.nodes] and (
            got.etcd.external_urls,
            got.etcd.ca_cert.strip(),
            got.etcd.cert.strip(),
            got.etcd.key.strip(),
            got.etcd.path,
        ) == (
            want.etcd.external_urls,
            want.etcd.ca_cert.strip(),
            want.etcd.cert.strip(),
            want.etcd.key.strip(),
            want.etcd.path,
        )
    untouched = {k: v for k, v in before.items() if k not in ("nodes", "services")} == {
        k: v for k, v in after.items() if k not in ("nodes", "services")
    }
    services_before = {k: v for k, v in (before.get("services") or {}).items() if k != "etcd"}
    services_after = {k: v for k, v in (after.get("services") or {}).items() if k != "etcd"}
    etcd_before = {
        k: v for k, v in ((before.get("services") or {}).get("etcd") or {}).items() if k not in _ETCD_EXTERNAL
    }
    etcd_after = {
        k: v for k, v in ((after.get("services") or {}).get("etcd") or {}).items() if k not in _ETCD_EXTERNAL
    }
    kept = [n for n in before["nodes"] if n.get("address") in {x.address for x in want.nodes}]
    nodes_ok = len(kept) == len(after["nodes"]) and all(
        {k: v for k, v in a.items() if k != "role"} == {k: v for k, v in b.items() if k != "role"}
        for a, b in zip(kept, after["nodes"], strict=False)
    )
    if not (
        same and untouched and services_before == services_after and etcd_before == etcd_after and nodes_ok
    ):
        raise InputError(
            f"{name}: the change cannot be made in place without touching other settings (an unusual "
            "layout); make it by hand: " + d.reason
        )


def write_recovered(
    cluster_yml: Path,
    state_file: Path,
    kube_config: Path | None,
    cfg: RkeConfig,
    d: KubernetesDecision,
    *,
    output: Path | None = None,
    now: dt.datetime | None = None,
) -> Written:
    """Render and write the new cluster.yml (default: cluster.recovered.yml beside the operator's)
    and, beside it, the state file and kube config `rke up --config` reads with it."""
    text = Path(cluster_yml).read_text(encoding="utf-8")
    out = Path(output) if output else recovered_path(Path(cluster_yml))
    if out.resolve() == Path(cluster_yml).resolve():
        raise InputError(
            f"-o {out}: is the operator's own cluster.yml; etcd-dr never overwrites it: pick another"
        )
    r = render(text, cfg, d, name=Path(cluster_yml).name)
    state = json.loads(Path(state_file).read_text(encoding="utf-8"))
    if d.rewrite_current_plane:
        state = _without_plane(state)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    moved = []
    new_state = state_path_for(out)
    for path, data, mode in (
        (out, r.text.encode(), 0o600 if d.external else 0o644),  # a key inside: the owner's only
        (new_state, (json.dumps(state, indent=2) + "\n").encode(), 0o600),
    ):
        aside = write_beside(path, data, mode, stamp)
        if aside is not None:
            moved.append(aside)
    kc_out = None
    if kube_config is not None and Path(kube_config).exists():
        kc_out = out.with_name(f"kube_config_{out.name}")
        aside = write_beside(kc_out, Path(kube_config).read_bytes(), 0o600, stamp)
        if aside is not None:
            moved.append(aside)
    return Written(out, new_state, kc_out, tuple(moved), r.diff, d)


def _without_plane(state: dict[str, Any]) -> dict[str, Any]:
    """currentState's rkeConfig with no etcd role (a node left with no role dropped), so that RKE's
    isEtcdPlaneReplaced sees no old plane. desiredState is rebuilt by RKE from cluster.yml."""
    cur = (state.get("currentState") or {}).get("rkeConfig")
    if not isinstance(cur, dict):
        return state
    nodes = []
    for n in cur.get("nodes") or []:
        roles = [r for r in n.get("role") or [] if r != RkeRole.ETCD.value]
        if roles:
            nodes.append({**n, "role": roles})
    state = json.loads(json.dumps(state))
    state["currentState"]["rkeConfig"]["nodes"] = nodes
    return state
