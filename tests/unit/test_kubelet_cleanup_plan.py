"""Kubelet cleanup's planner on fixtures: the ids are read from kubelet's exact words; a container is
removed only when kubelet loops now, its label names an id from those words and no such sandbox
exists; a decoy, a pod's container and a running kubelet are left alone; params survive JSON."""

from __future__ import annotations

from etcd_dr.hostrepair.plan import (
    SANDBOX_LABEL,
    CleanupAction,
    Container,
    KubeletLook,
    RemoveParams,
    RestartParams,
    plan_cleanup,
    sandbox_ids_in,
)
from etcd_dr.plans import Refusal

GONE = "a" * 64
ALIVE = "b" * 64
LINE = (
    "F0601 04:49:01.000000 1 kubelet.go:1296] Failed to start ContainerManager failed to build map of "
    f"initial containers from runtime: no PodsandBox found with Id '{GONE}'"
)


def orphan(cid: str = "1" * 64, sid: str = GONE) -> Container:
    return Container(
        cid, "k8s_app_web", "nginx:1.21", {SANDBOX_LABEL: sid, "io.kubernetes.pod.name": "web"}, "exited"
    )


def loop(**kw) -> KubeletLook:
    base = dict(
        host="node2", kubelet_exists=True, running=False, restarting=True, restart_count=7, exit_code=255,
        log_ids=(GONE,), labelled={GONE: (orphan(),)},
    )  # fmt: skip
    return KubeletLook(**{**base, **kw})


def test_the_ids_come_from_kubelets_exact_words_once_each_in_order() -> None:
    other = "c" * 64
    bare = f"no PodsandBox found with Id '{'d' * 64}'"
    log = f"{LINE}\nI0601 restarting\n{LINE}\n{LINE.replace(GONE, other)}\n{bare}"
    assert sandbox_ids_in(log) == (GONE, other)  # the bare phrase without kubelet's failure is not it
    assert sandbox_ids_in("Started kubelet") == ()
    structured = (
        'E0601 04:49:01.000000 1 kubelet.go:1431] "Failed to start ContainerManager" '
        'err="failed to build map '
        f"of initial containers from runtime: no PodsandBox found with Id '{other}'\""
    )
    assert sandbox_ids_in(structured) == (other,)  # newer kubelets' structured logging


def test_a_looping_kubelet_gets_its_orphans_removed_and_a_restart() -> None:
    plan = plan_cleanup(loop(), cluster="c")
    assert not plan.refused
    remove, restart = plan.steps
    assert remove.action is CleanupAction.REMOVE_CONTAINERS and remove.destructive
    (c,) = remove.typed(RemoveParams).containers
    assert (c.id, c.name, c.image, c.sandbox_id) == ("1" * 64, "k8s_app_web", "nginx:1.21", GONE)
    assert restart.action is CleanupAction.RESTART_KUBELET and not restart.destructive
    assert restart.typed(RestartParams).stay_s == 10.0
    assert plan.reason == (
        "kubelet on node2 is in the sandbox loop (restarted 7 times, 'no PodsandBox found with Id' "
        "'aaaaaaaaaaaa...'): remove the 1 container labelled with it (k8s_app_web (nginx:1.21)) "
        "and restart kubelet"
    )
    # the journal's round trip: the params read back into their types
    back = RemoveParams.from_json(remove.typed(RemoveParams).to_json())
    assert back == remove.params


def test_nothing_is_removed_unless_kubelet_loops_now() -> None:
    quiet = plan_cleanup(loop(log_ids=(), labelled={}), cluster="c")
    assert (
        quiet.refusal is Refusal.UNSAFE and "is not in the sandbox loop" in quiet.reason and not quiet.steps
    )
    steady = plan_cleanup(loop(running=True, restarting=False, exit_code=0, uptime_s=600.0), cluster="c")
    assert steady.refused and "runs steadily (up 600 s" in steady.reason
    # just restarted by its loop: it runs for the seconds its start takes, then fails again
    between = plan_cleanup(loop(running=True, restarting=False, exit_code=0, uptime_s=2.0), cluster="c")
    assert not between.refused
    assert plan_cleanup(loop(kubelet_exists=False), cluster="c").refused


def test_a_sandbox_that_exists_keeps_its_containers() -> None:
    pod = orphan("2" * 64, ALIVE)
    plan = plan_cleanup(
        loop(log_ids=(ALIVE,), existing_sandboxes=frozenset({ALIVE}), labelled={ALIVE: (pod,)}), cluster="c"
    )
    assert plan.refused and "exist on node2" in plan.reason
    both = plan_cleanup(
        loop(
            log_ids=(GONE, ALIVE),
            existing_sandboxes=frozenset({ALIVE}),
            labelled={GONE: (orphan(),), ALIVE: (pod,)},
        ),
        cluster="c",
    )
    (c,) = both.steps[0].typed(RemoveParams).containers
    assert c.id == "1" * 64 and "its containers stay" in both.reason


def test_a_look_alike_label_is_not_removed() -> None:
    decoy = Container("3" * 64, "decoy", "busybox", {"io.kubernetes.sandbox.id.old": GONE}, "running")
    plan = plan_cleanup(loop(labelled={GONE: (orphan(), decoy)}), cluster="c")
    assert [c.name for c in plan.steps[0].typed(RemoveParams).containers] == ["k8s_app_web"]


def test_with_the_orphans_gone_already_only_the_restart_is_left() -> None:
    plan = plan_cleanup(loop(labelled={GONE: ()}), cluster="c")
    assert [s.action for s in plan.steps] == [CleanupAction.RESTART_KUBELET]
