"""Fencing evidence: can a voter still take part in the old cluster?

A voter is fenced when it answers on neither its client nor its peer port within the timeout, or
when its etcd is verifiably stopped (container or process not running, checked over SSH). Anything
else is not fenced, and the evidence says how to fence it. The decision that uses this evidence is
pure (etcd_dr.recovery); this module only gathers it, in parallel, under the inventory's timeouts.
"""

from __future__ import annotations

import concurrent.futures as cf
import socket
from collections.abc import Callable, Sequence

from etcd_dr.errors import EtcdDrError
from etcd_dr.executor import Executor
from etcd_dr.inventory import Host, Inventory, RuntimeKind
from etcd_dr.recovery import FenceEvidence
from etcd_dr.runtime import runtime_for


def port_answers(address: str, port: int, timeout: float) -> bool:
    """A TCP connect within timeout (no TLS: the question is only whether anything listens)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def how_to_fence(inv: Inventory, host: Host) -> str:
    e = inv.etcd
    stop = (
        f"`docker kill {e.container}` on {host.name}"
        if e.runtime is RuntimeKind.DOCKER
        else f"kill its etcd process on {host.name}"
    )
    return f"stop its etcd ({stop}), power {host.name} off, or cut {e.client_port}/{e.peer_port} on it"


def evidence_for(
    inv: Inventory, host: Host, make: Callable[[Host], Executor], timeout: float | None = None
) -> FenceEvidence:
    e = inv.etcd
    t = e.dial_timeout if timeout is None else timeout
    ports_ = (e.client_port, e.peer_port)
    # both ports at once: a dead host costs one timeout, not two
    with cf.ThreadPoolExecutor(max_workers=len(ports_)) as pool:
        answers = list(pool.map(lambda p: port_answers(host.address, p, t), ports_))
    answering = [p for p, ok in zip(ports_, answers, strict=True) if ok]
    if not answering:
        return FenceEvidence(
            host.name, True, f"no answer on {e.client_port} and {e.peer_port} within {t:g} s"
        )
    ports = " and ".join(str(p) for p in answering)
    ex = None
    try:
        ex = make(host)
        running = runtime_for(inv, ex).is_running()
    except EtcdDrError as err:
        return FenceEvidence(
            host.name,
            False,
            f"answers on {ports} and its etcd could not be checked ({err}); {how_to_fence(inv, host)}",
        )
    finally:
        if ex is not None:
            ex.close()
    what = f"container {e.container}" if e.runtime is RuntimeKind.DOCKER else "etcd process"
    if not running:
        return FenceEvidence(
            host.name, True, f"answers on {ports} but its {what} is not running (checked over SSH)"
        )
    return FenceEvidence(
        host.name, False, f"answers on {ports} and its {what} runs; {how_to_fence(inv, host)}"
    )


def gather(
    inv: Inventory,
    hosts: Sequence[str],
    *,
    executor_factory: Callable[[Host], Executor] | None = None,
    timeout: float | None = None,
) -> dict[str, FenceEvidence]:
    """Evidence for each named host, gathered in parallel."""
    if executor_factory is None:
        from etcd_dr.executor import audit_log_for, executor_for

        audit = audit_log_for(inv)

        def executor_factory(h: Host) -> Executor:
            return executor_for(inv, h, audit=audit)

    targets = [inv.host(h) for h in hosts]
    if not targets:
        return {}
    with cf.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = {h.name: pool.submit(evidence_for, inv, h, executor_factory, timeout) for h in targets}
        return {name: f.result() for name, f in futures.items()}
