"""The Kubernetes step vocabulary: what a plan that brings Kubernetes back after etcd may do on the
hosts, in the capability's shape (README "The shape of a capability"; etcd_dr.recovery.steps is
the model): a `KubernetesAction`, a frozen params dataclass and its handler for each, paired in
`VOCABULARY`. `done()` only observes (one remote round trip where it can); `run()` acts.

In the order a plan uses them (the source incident's night, decided up front):
- `ssl-old`: each etcd host's /etc/kubernetes/ssl copied to ssl_old before anything can regenerate
  it (an ssl_old already there that is not this step's complete copy is renamed aside, timestamped,
  never overwritten); the copy carries a sha256 manifest taken from the original;
- `etcd-on-ssl-old`: the etcd member recreated as a copy of itself (same image, data dir, mounts,
  flags) reading its certificates from ssl_old; the old container kept, renamed, restart=no;
- `rke-files`: the new cluster.yml and cluster.rkestate uploaded to the deploy host's remote_dir;
- `rke-up`: `rke up` on the deploy host over SSH, its log streamed to `say` and the audit log,
  bounded by rke.up_timeout, its known failures classified into errors that say what to do;
- `api-check`: /readyz `ok` on every controlplane host, and the /registry objects per resource
  prefix at least as many as recorded before the fault (etcd_dr.kubernetes.apicheck).
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from etcd_dr.audit import redact
from etcd_dr.errors import EtcdDrError
from etcd_dr.executor import bastion_for
from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes import rkemessages as msg
from etcd_dr.plans import Params, Plan, Step, StepHandler, typed_steps
from etcd_dr.runtime import DockerRuntime, MemberParams, ProcessRuntime, runtime_for
from etcd_dr.stepctx import StepContext, wait

MANIFEST = ".etcd-dr-ssl-old.sha256"  # in the copy: the original's files and their sha256
RKE_UP_MARK = ".etcd-dr-rke-up-"  # + sha256 of the cluster.yml `rke up` succeeded with
STOP_TIMEOUT_S = 10.0
WAIT_S = 30.0


class KubernetesStepError(EtcdDrError):
    """A Kubernetes step could not be carried out; the message says what to do."""


# --- pure helpers ----------------------------------------------------------------------------------------


def ssl_old_args(args: Sequence[str], cert_dir: str, old_dir: str) -> list[str]:
    """etcd's arguments with every path under cert_dir moved under old_dir (`--cert-file=`,
    `--peer-key-file=`, ...; both `--flag=value` and `--flag value`). Pure."""
    src, dst = cert_dir.rstrip("/") + "/", old_dir.rstrip("/") + "/"
    out = []
    for a in args:
        name, eq, value = a.partition("=")
        if eq and value.startswith(src):
            out.append(f"{name}={dst}{value[len(src) :]}")
        elif a.startswith(src):
            out.append(dst + a[len(src) :])
        else:
            out.append(a)
    return out


def manifest_text(digests: Mapping[str, str]) -> str:
    """sha256sum's format (`sha256sum -c` reads it back). Pure."""
    return "".join(f"{d}  ./{p}\n" for p, d in sorted(digests.items()))


def parse_manifest(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        d, _, p = line.partition("  ")
        if p:
            out[p.removeprefix("./")] = d
    return out


class RkeFailure(enum.StrEnum):
    """What a failed `rke up` ran into: closed, each with what to do."""

    NO_ETCD = "no-etcd"
    ETCD_UNREACHABLE = "etcd-unreachable"
    BOTH_ETCD = "both-etcd"
    EXTERNAL_FIELD = "external-field-empty"
    CLIENT_KEY_NOT_RSA = "client-key-not-rsa"
    PLANE_REPLACED = "etcd-plane-replaced"
    QUORUM_LOST = "quorum-lost"
    EXTERNAL_REFUSED = "external-etcd-refused"
    TIMEOUT = "timeout"
    OTHER = "other"


# RKE's messages (etcd_dr.kubernetes.rkemessages) as they appear in its log, most specific first
_KNOWN: tuple[tuple[str, RkeFailure, str], ...] = (
    (
        msg.NO_ETCD_PLANE_UNREACHABLE.split("{", 1)[0],
        RkeFailure.ETCD_UNREACHABLE,
        "rke could not reach the etcd hosts of cluster.yml over SSH from the deploy host: check the "
        "nodes' address, user, port and ssh_key_path from there, or point cluster.yml at the "
        "recovered members",
    ),
    (
        msg.NO_ETCD_PLANE,
        RkeFailure.NO_ETCD,
        "cluster.yml has no etcd node and no external etcd: give the recovered members the etcd "
        "role, or set services.etcd.external_urls to them (`etcd-dr kubernetes cluster-yml`)",
    ),
    (
        msg.INTERNAL_AND_EXTERNAL,
        RkeFailure.BOTH_ETCD,
        "cluster.yml has etcd nodes and services.etcd.external_urls: with external etcd no node may "
        "keep the etcd role",
    ),
    *(
        (
            m,
            RkeFailure.EXTERNAL_FIELD,
            "services.etcd of cluster.yml needs ca_cert, cert and key (PEM text the recovered etcd "
            "accepts) and path (/registry) with external_urls",
        )
        for m in (
            msg.EXTERNAL_CA_EMPTY,
            msg.EXTERNAL_CERT_EMPTY,
            msg.EXTERNAL_KEY_EMPTY,
            msg.EXTERNAL_PATH_EMPTY,
        )
    ),
    (
        msg.CLIENT_KEY_NOT_RSA.split("{", 1)[0],
        RkeFailure.CLIENT_KEY_NOT_RSA,
        "RKE takes only an RSA key for external etcd (a Go panic on any other): give services.etcd.key "
        "an RSA key with a certificate the recovered etcd accepts (signed by its kube-ca)",
    ),
    (
        msg.PLANE_REPLACED_CAUSE,
        RkeFailure.PLANE_REPLACED,
        "the etcd nodes of cluster.yml do not overlap the old etcd plane of cluster.rkestate's "
        "currentState (or every old one is unreachable): point RKE at the recovered etcd as "
        "external etcd (`etcd-dr kubernetes plan` decides it)",
    ),
    (
        msg.REQUEST_TIMED_OUT,
        RkeFailure.QUORUM_LOST,
        "etcd has no quorum: recover it first (`etcd-dr recover`), then run `rke up` again",
    ),
    (
        "Failed to delete etcd member",
        RkeFailure.QUORUM_LOST,
        "rke could not remove the etcd members of the hosts that left cluster.yml: etcd has no quorum; "
        "recover it first (`etcd-dr recover`), then run `rke up` again",
    ),
    (
        "Failed to connect to external etcd",
        RkeFailure.EXTERNAL_REFUSED,
        "the etcd of external_urls refused the PEMs of cluster.yml or did not answer: give ca_cert, "
        "cert and key that it accepts (the ones in ssl_old) and check that it runs",
    ),
)


def classify_rke(
    output: str, rc: int, *, timed_out: bool = False, timeout_s: float = 0
) -> tuple[RkeFailure, str]:
    """What a failed `rke up` ran into and what to do, from its log (FATA lines first). Pure."""
    if timed_out:
        return RkeFailure.TIMEOUT, (
            f"rke up did not finish within rke.up_timeout ({timeout_s:g} s) and was stopped: see its log "
            "in the audit log, raise up_timeout if it was still making progress"
        )
    fatal = [ln for ln in output.splitlines() if ln.startswith((msg.FATAL_PREFIX, "panic: "))]
    for lines in (fatal, output.splitlines()):
        for ln in reversed(lines):
            for fragment, kind, todo in _KNOWN:
                if fragment in ln:
                    return kind, f"{todo} (rke: {ln.strip()[:300]})"
    last = (fatal or output.strip().splitlines() or ["no output"])[-1].strip()
    return RkeFailure.OTHER, f"rke up failed (exit {rc}): {last[:300]}; its whole log is in the audit log"


# --- the vocabulary -------------------------------------------------------------------------------------


class KubernetesAction(enum.StrEnum):
    """Every action a Kubernetes plan may hold; `VOCABULARY` names its params type and handler."""

    SSL_OLD = "ssl-old"
    ETCD_ON_SSL_OLD = "etcd-on-ssl-old"
    RKE_FILES = "rke-files"
    RKE_UP = "rke-up"
    API_CHECK = "api-check"


@dataclass(frozen=True)
class SslOldParams(Params):
    cert_dir: str  # /etc/kubernetes/ssl
    old_dir: str  # /etc/kubernetes/ssl_old


@dataclass(frozen=True)
class EtcdOnSslOldParams(MemberParams):
    cert_dir: str
    old_dir: str
    retired: str  # the name the member before it is kept under (renamed, restart=no)


@dataclass(frozen=True)
class RkeFilesParams(Params):
    cluster_yml: str  # on this machine
    state_file: str  # on this machine
    remote_dir: str  # on the deploy host
    config_name: str = "cluster.yml"  # its name there; the state file's follows RKE's rule

    @property
    def state_name(self) -> str:
        return posixpath.splitext(self.config_name)[0] + ".rkestate"


@dataclass(frozen=True)
class RkeUpParams(Params):
    remote_dir: str
    binary: str
    timeout_s: float
    config_name: str = "cluster.yml"


@dataclass(frozen=True)
class ApiCheckParams(Params):
    hosts: tuple[str, ...]  # the controlplane hosts
    endpoints: tuple[str, ...]  # the etcd kube-apiserver reads (client URLs)
    expected: Mapping[str, int]  # objects per resource prefix, recorded before the fault
    root: str = apicheck.REGISTRY
    port: int = apicheck.APISERVER_PORT
    ca_path: str = "/etc/kubernetes/ssl/kube-ca.pem"  # on each host: the CA kube-apiserver's cert is from
    timeout_s: float = 120.0


# --- the context ----------------------------------------------------------------------------------------


@dataclass
class Ctx(StepContext):
    """What the handlers share (etcd_dr.stepctx), and what the API check found last."""

    ready: dict[str, str | None] = field(default_factory=dict)  # host -> None (ready) or what it said
    counts: dict[str, int] = field(default_factory=dict)

    def runtime(self, host: str, name: str) -> DockerRuntime | ProcessRuntime:
        rt = runtime_for(self.inv, self.executor(host), host=self.inv.host(host))
        if isinstance(rt, DockerRuntime):
            return DockerRuntime(rt.ex, name, rt.image, docker=rt.docker, binds=rt.binds)
        return ProcessRuntime(
            rt.ex, rt.binary, name, unit_dir=rt.unit_dir, run_dir=rt.run_dir, log_dir=rt.log_dir
        )


def _host(step: Step) -> str:
    if step.host is None:
        raise KubernetesStepError(f"step {step.id}: no host; the plan is malformed, plan again")
    return step.host


# --- the handlers ---------------------------------------------------------------------------------------


class SslOld:
    """A complete copy of the certificates, made once: done when old_dir holds its manifest and every
    file in it still has the digest the original had when it was copied."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def _intact(self, host: str, p: SslOldParams) -> bool:
        return self.c.fs(host).matches_manifest(p.old_dir, MANIFEST)  # one round trip

    def _not_in_use(self, host: str, p: SslOldParams) -> None:
        """Refuse to move an ssl_old aside that a running etcd reads its certificates from (etcd
        opens them at each TLS handshake: it would stop accepting connections)."""
        name = self.c.inv.etcd.container
        me = self.c.runtime(host, name).statuses(name)[name]
        prefix = p.old_dir.rstrip("/") + "/"
        if me.running and any(prefix in a for a in me.args):
            raise KubernetesStepError(
                f"{host}: etcd runs with its certificates in {p.old_dir}, which is not a complete copy "
                f"made by this step (no intact {MANIFEST}); nothing was moved or copied: check "
                f"{p.old_dir} against {p.cert_dir} by hand, and write the manifest (sha256sum format) "
                "or move etcd off it first"
            )

    def done(self, step: Step) -> bool | str:
        p, host = step.typed(SslOldParams), _host(step)
        return self._intact(host, p) and f"{p.old_dir} is a complete copy of {p.cert_dir} (sha256 manifest)"

    def run(self, step: Step) -> str:
        p, host = step.typed(SslOldParams), _host(step)
        fs = self.c.fs(host)
        original = fs.digests(p.cert_dir)
        if not original:
            raise KubernetesStepError(
                f"{host}: {p.cert_dir} holds no certificates to keep; nothing copied (is this an etcd host?)"
            )
        note = ""
        if fs.exists(p.old_dir):  # not our complete copy (done() said so): keep it, never overwrite
            self._not_in_use(host, p)
            aside = fs.move_aside(
                p.old_dir, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), reason="keep an older ssl_old"
            )
            note = f"; the {p.old_dir} found there was kept as {aside}"
        fs.copy_atomic(
            p.cert_dir, p.old_dir, reason=f"keep the certificates etcd reads: {p.cert_dir} -> {p.old_dir}"
        )
        copied = fs.digests(p.old_dir)
        if copied != original:
            raise KubernetesStepError(
                f"{host}: the copy {p.old_dir} differs from {p.cert_dir} (changed while copied?); "
                "run the step again"
            )
        fs.write_atomic(manifest_text(original).encode(), posixpath.join(p.old_dir, MANIFEST), mode=0o600)
        return f"{len(original)} files copied to {p.old_dir}{note}"


class EtcdOnSslOld:
    """The member recreated to read its certificates from old_dir: done when it runs with every
    certificate path under old_dir (and none under cert_dir)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    @staticmethod
    def _moved(args: Sequence[str], p: EtcdOnSslOldParams) -> bool:
        src, dst = p.cert_dir.rstrip("/") + "/", p.old_dir.rstrip("/") + "/"
        return any(dst in a for a in args) and not any(src in a for a in args)

    def done(self, step: Step) -> bool:
        p = step.typed(EtcdOnSslOldParams)
        me = self.c.runtime(_host(step), p.name).statuses(p.name)[p.name]
        return me.running and self._moved(me.args, p)

    def run(self, step: Step) -> str:
        p, host = step.typed(EtcdOnSslOldParams), _host(step)
        rt = self.c.runtime(host, p.name)
        st = rt.statuses(p.name, p.retired)
        me, old = st[p.name], st[p.retired]
        restart = True  # RKE runs etcd with --restart=always; the original's own policy when seen
        if not old.exists:  # the first run: the member now is the template
            if not me.exists:
                raise KubernetesStepError(
                    f"{host}: no etcd member {p.name} to move onto {p.old_dir}; nothing changed"
                )
            ssl = self.c.fs(host).tests(("-d", p.old_dir), ("-f", posixpath.join(p.old_dir, MANIFEST)))
            if not all(ssl):
                raise KubernetesStepError(
                    f"{host}: {p.old_dir} is not a complete copy yet (run the ssl-old step first); "
                    "nothing changed"
                )
            restart = me.restarts
            rt.stop(STOP_TIMEOUT_S)
            wait(
                lambda: not rt.is_running(),
                STOP_TIMEOUT_S + 15,
                f"etcd on {host} stopped",
                error=KubernetesStepError,
            )
            rt.rename(p.retired).set_restart(False)
            template = rt.statuses(p.retired)[p.retired]
        else:
            template = old
            if me.exists:  # a start that did not finish: the member there is ours, not the original
                raise KubernetesStepError(
                    f"{host}: both {p.name} and {p.retired} exist and {p.name} does not read {p.old_dir}: "
                    f"look at them (`docker inspect`), then rename or stop {p.name} and run again"
                )
        args = ssl_old_args(template.args, p.cert_dir, p.old_dir)
        rt.start_like(p.retired, args, restart_always=restart, seen=template)
        client = self.c.client(p.endpoint)
        wait(
            lambda: _answers(client, p.endpoint),
            WAIT_S,
            f"etcd on {host} answers, reading {p.old_dir}",
            error=KubernetesStepError,
        )
        return f"etcd reads {p.old_dir}; the member before it is kept as {p.retired} (restart=no)"


def _answers(client, endpoint: str) -> bool:
    try:
        client.status(endpoint, timeout=1.0)
    except EtcdDrError:
        return False
    return True


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KubernetesStepError(
            f"{what} {path} cannot be read ({e.strerror}): write it first "
            "(`etcd-dr kubernetes cluster-yml`); nothing was uploaded"
        ) from None


class RkeFiles:
    """cluster.yml and its state file on the deploy host: done when both there have the local
    files' digests, or `rke up` already succeeded with this cluster.yml (it rewrote the state file)."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool | str:
        p = step.typed(RkeFilesParams)
        config = _sha(_local(p.cluster_yml, "cluster.yml"))
        state = _sha(_local(p.state_file, "the state file"))
        got = self.c.fs(_host(step)).digests(p.remote_dir) or {}
        if got.get(p.config_name) != config:
            return False
        if f"{RKE_UP_MARK}{config}" in got:
            # rke up ran with this cluster.yml and wrote its own state since: never upload over it
            return f"rke up already ran with this {p.config_name} (its state file there is newer)"
        return got.get(p.state_name) == state

    def run(self, step: Step) -> str:
        p, host = step.typed(RkeFilesParams), _host(step)
        config, state = _local(p.cluster_yml, "cluster.yml"), _local(p.state_file, "the state file")
        fs = self.c.fs(host)
        # 0600 both: the state file holds every key of the cluster, cluster.yml external etcd's
        fs.write_atomic(
            config, posixpath.join(p.remote_dir, p.config_name), mode=0o600, reason="RKE's cluster.yml"
        )
        fs.write_atomic(
            state, posixpath.join(p.remote_dir, p.state_name), mode=0o600, reason="RKE's state file"
        )
        return f"{p.config_name} and {p.state_name} in {host}:{p.remote_dir}"


class _Lines:
    """Bytes as they arrive -> whole lines to `emit` (the rest kept until its newline)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.buf, self.lines = emit, b"", []

    def __call__(self, data: bytes) -> None:
        self.buf += data
        *whole, self.buf = self.buf.split(b"\n")
        for raw in whole:
            self.line(raw)

    def line(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self.lines.append(text)
        self.emit(text)

    def close(self) -> None:
        if self.buf:
            self.line(self.buf)
            self.buf = b""


class RkeUp:
    """`rke up --config <config_name>` in remote_dir on the deploy host. Done when the deploy host
    holds this step's mark for the cluster.yml there: `rke up` succeeded with exactly that file."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def done(self, step: Step) -> bool | str:
        p = step.typed(RkeUpParams)
        got = self.c.fs(_host(step)).digests(p.remote_dir) or {}
        sha = got.get(p.config_name)
        return bool(sha and f"{RKE_UP_MARK}{sha}" in got) and f"rke up succeeded with this {p.config_name}"

    def run(self, step: Step) -> str:
        p, host = step.typed(RkeUpParams), _host(step)
        ex = self.c.executor(host)
        got = self.c.fs(host).digests(p.remote_dir) or {}
        sha = got.get(p.config_name)
        if sha is None:
            raise KubernetesStepError(
                f"{host}: no {p.config_name} in {p.remote_dir} (run the rke-files step first); rke up not run"
            )
        audit = self.c.audit

        def emit(line: str) -> None:
            line = redact(line)  # RKE prints no keys; a line that did would not reach a log
            self.c.say(f"rke: {line}")
            if audit is not None:
                audit.event(host=host, action="rke-up:log", outcome="ok", reason="rke up's log", line=line)

        lines = _Lines(emit)
        argv = [
            "sh",
            "-c",
            'cd "$1" && exec "$2" up --config "$3" 2>&1',
            "rke-up",
            p.remote_dir,
            p.binary,
            p.config_name,
        ]
        streaming = getattr(ex, "run_streaming", None)
        t0 = time.monotonic()
        if streaming is not None:
            r = streaming(argv, lines, timeout=p.timeout_s, reason="rke up")
        else:  # an executor without streaming: the log at the end
            r = ex.run(argv, timeout=p.timeout_s, check=False, reason="rke up")
            lines(r.stdout.encode())
        lines.close()
        timed_out = r.rc == -1 and time.monotonic() - t0 >= p.timeout_s
        if r.rc != 0:
            kind, todo = classify_rke(
                "\n".join(lines.lines), r.rc, timed_out=timed_out, timeout_s=p.timeout_s
            )
            raise KubernetesStepError(f"rke up on {host} failed ({kind}): {todo}")
        self.c.fs(host).write_atomic(b"", posixpath.join(p.remote_dir, f"{RKE_UP_MARK}{sha}"), mode=0o600)
        return f"rke up finished in {time.monotonic() - t0:.1f} s ({len(lines.lines)} log lines)"


class ApiCheck:
    """/readyz ok on every controlplane host and no resource prefix with fewer objects than before."""

    def __init__(self, c: Ctx) -> None:
        self.c = c

    def _look(self, p: ApiCheckParams) -> list[str]:
        """What is not right yet, one phrase each (empty: Kubernetes is back)."""
        problems = []
        for h in p.hosts:
            try:
                ca = self.c.fs(h).read(p.ca_path)
            except EtcdDrError as e:
                self.c.ready[h] = f"kube-ca not readable: {e}"
            else:
                address = self.c.inv.host(h).address
                b = bastion_for(self.c.inv)  # no direct way in: ask through the bastion
                via = b.forward(address, p.port) if b is not None else None
                self.c.ready[h] = apicheck.readyz(address, ca, port=p.port, via=via)
            if self.c.ready[h] is not None:
                problems.append(f"{h} /readyz: {self.c.ready[h]}")
        try:
            self.c.counts = apicheck.registry_counts(self.c.client(p.endpoints[0], 5.0), p.root)
        except EtcdDrError as e:
            problems.append(f"objects under {p.root} not readable: {e}")
            return problems
        short = apicheck.compare(p.expected, self.c.counts)
        if short:
            problems.append(f"objects missing under {p.root}: {apicheck.missing_sentence(short)}")
        return problems

    def done(self, step: Step) -> bool | str:
        p = step.typed(ApiCheckParams)
        if self._look(p):
            return False
        n = sum(p.expected.values())
        return f"/readyz ok on {', '.join(p.hosts)}; all {n} objects recorded under {p.root} are there"

    def run(self, step: Step) -> None:
        p = step.typed(ApiCheckParams)
        last: list[str] = []

        def back() -> bool:
            last[:] = self._look(p)
            return not last

        try:
            wait(back, p.timeout_s, "Kubernetes is back", error=KubernetesStepError, poll=1.0)
        except KubernetesStepError as e:
            raise KubernetesStepError(f"{e}: {'; '.join(last)}") from None


# --- the pairing ------------------------------------------------------------------------------------------

VOCABULARY: dict[KubernetesAction, tuple[type[Params], Callable[[Ctx], StepHandler]]] = {
    KubernetesAction.SSL_OLD: (SslOldParams, SslOld),
    KubernetesAction.ETCD_ON_SSL_OLD: (EtcdOnSslOldParams, EtcdOnSslOld),
    KubernetesAction.RKE_FILES: (RkeFilesParams, RkeFiles),
    KubernetesAction.RKE_UP: (RkeUpParams, RkeUp),
    KubernetesAction.API_CHECK: (ApiCheckParams, ApiCheck),
}


def handlers(c: Ctx) -> dict[str, StepHandler]:
    return {str(a): h(c) for a, (_, h) in VOCABULARY.items()}


def typed_plan(plan: Plan) -> Plan:
    """A Kubernetes plan read back from JSON (the journal) with each step's action and params in
    their types. Raises ParamsError naming the step for what this version does not know."""
    return typed_steps(plan, KubernetesAction, {a: cls for a, (cls, _) in VOCABULARY.items()}, "Kubernetes")


__all__ = [
    "VOCABULARY",
    "ApiCheckParams",
    "Ctx",
    "EtcdOnSslOldParams",
    "KubernetesAction",
    "KubernetesStepError",
    "RkeFailure",
    "RkeFilesParams",
    "RkeUpParams",
    "SslOldParams",
    "classify_rke",
    "handlers",
    "ssl_old_args",
    "typed_plan",
]
