"""One learner run's live handles on one host (its executor and runtime, an etcd client for the
voters, the audit log, the CA) and the reads its planner and steps share; gather_facts() is the
read-only probe of the host that the planner decides on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from etcd_dr.audit import AuditLog
from etcd_dr.certissue import existing_pair_problem, load_ca_cert, read_host_clock
from etcd_dr.certs import CertKeyPair
from etcd_dr.errors import EtcdDrError, InputError
from etcd_dr.etcd.client import EtcdClient, Member
from etcd_dr.executor import Executor, audit_log_for, executor_for
from etcd_dr.inventory import Host, Inventory
from etcd_dr.learner.plan import HostFacts, LearnerOptions
from etcd_dr.runtime import runtime_for
from etcd_dr.state import ClusterState, client_for
from etcd_dr.stepctx import HostFS, Say

if TYPE_CHECKING:
    from etcd_dr.diverged.read import DivergedReport


class Session:
    """Live handles for one run on one host: its executor and runtime, an etcd client for the
    voters, the audit log, the CA (given, or read over SSH when a certificate must be signed)."""

    def __init__(
        self,
        inv: Inventory,
        host: str,
        opts: LearnerOptions,
        *,
        ca: CertKeyPair | None = None,
        say: Say | None = None,
        client: EtcdClient | None = None,
        endpoints: Sequence[str] = (),
    ) -> None:
        self.inv = inv
        self.host: Host = inv.host(host)
        self.opts = opts
        self.ca = ca
        self.say = say or (lambda _m: None)
        self.audit: AuditLog | None = audit_log_for(inv)
        self._ex: Executor | None = None
        self._client = client
        self._own_client = client is None
        # the client's endpoints: the inventory's voters unless given (a rejoin asks only the members:
        # a lost master's old etcd may answer and never lead)
        self._endpoints = tuple(endpoints)
        self._ca_cert: bytes | None = None
        self.member_id: int | None = None
        self.members: tuple[Member, ...] = ()
        self.t_add: float | None = None
        self.t_start: float | None = None
        self.caught_up_s: float | None = None
        self.t_caught_up: float | None = None
        # a rejoin: the picture it was planned from, and what the old member held beyond the cluster
        self.state: ClusterState | None = None
        self.diverged: DivergedReport | None = None

    # -- handles (lazy: a refused plan opens nothing it does not need)

    @property
    def ex(self) -> Executor:
        if self._ex is None:
            self._ex = executor_for(self.inv, self.host, audit=self.audit)
        return self._ex

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = client_for(
                self.inv, list(self._endpoints) or [self.inv.client_url(v) for v in self.inv.voters]
            )
        return self._client

    @property
    def fs(self) -> HostFS:
        """File verbs on the host (etcd_dr.stepctx), through its executor: audited."""
        return HostFS(self.ex)

    def runtime(self):
        return runtime_for(self.inv, self.ex, host=self.host, image=self.opts.image, binary=self.opts.binary)

    @property
    def peer_url(self) -> str:
        return self.inv.peer_url(self.host)

    @property
    def client_url(self) -> str:
        return self.inv.client_url(self.host)

    def event(self, action: str, outcome: str, reason: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.event(host=self.host.name, action=action, outcome=outcome, reason=reason, **details)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()
            self._ex = None
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads

    def member(self) -> Member | None:
        """The host's member in the linearizable member list (NOTES: a serializable one may still
        show a just-promoted member as a learner)."""
        self.members = self.client.member_list(linearizable=True)
        for m in self.members:
            if self.peer_url in m.peer_urls:
                self.member_id = m.id
                return m
        return None

    def data_dir_in_use(self) -> bool:
        return self.fs.is_dir(f"{self.inv.etcd.data_dir}/member")

    def ca_cert_pem(self) -> bytes:
        """The CA certificate (no key): the given CA's, else read once from the `ca:` host."""
        if self._ca_cert is None:
            self._ca_cert = self.ca.cert_pem if self.ca else load_ca_cert(self.inv)
        return self._ca_cert


def gather_facts(s: Session) -> HostFacts:
    """Read-only probe of the target host for the planner."""
    try:
        clock = read_host_clock(s.ex)
        rt = s.runtime()
        (st,) = rt.statuses().values()  # exists and running in one look
        return HostFacts(
            host=s.host.name,
            cert_problem=existing_pair_problem(
                s.inv, s.host, s.ca_cert_pem(), s.ex, clock.now, ips=s.opts.ips, dns=s.opts.dns
            ),
            data_dir_in_use=s.data_dir_in_use(),
            runtime_exists=st.exists,
            runtime_running=st.exists and st.running,
            clock_skew_s=clock.skew_s,
        )
    except InputError:
        raise
    except EtcdDrError as e:
        return HostFacts(host=s.host.name, ssh_error=str(e))


def probe_wanted(inv: Inventory, host: str, opts: LearnerOptions | None = None) -> bool:
    """Worth probing over SSH: a host of the inventory that may become a learner (to rejoin: a voter
    or a learner host)."""
    try:
        h = inv.host(host)
    except InputError:
        return False
    return (h.is_voter or h.is_learner) if opts is not None and opts.rejoin else h.is_learner
