"""The Kubernetes step vocabulary's pure parts: etcd's arguments moved onto ssl_old, the copy's
manifest, rke up's failures classified (from the stand-in's exact messages), params through JSON,
and the API check's counting."""

from __future__ import annotations

import pytest

from etcd_dr.kubernetes import apicheck
from etcd_dr.kubernetes import steps as K
from etcd_dr.lab.standins import rke
from etcd_dr.plans import ParamsError, Plan, Step


def test_ssl_old_args_move_only_the_certificate_paths() -> None:
    args = [
        "--name=etcd-master3",
        "--data-dir=/var/lib/rancher/etcd",
        "--trusted-ca-file=/etc/kubernetes/ssl/kube-ca.pem",
        "--cert-file=/etc/kubernetes/ssl/kube-etcd-10-0-0-13.pem",
        "--peer-key-file",
        "/etc/kubernetes/ssl/kube-etcd-10-0-0-13-key.pem",
        "--client-cert-auth",
    ]
    out = K.ssl_old_args(args, "/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old")
    assert out == [
        "--name=etcd-master3",
        "--data-dir=/var/lib/rancher/etcd",
        "--trusted-ca-file=/etc/kubernetes/ssl_old/kube-ca.pem",
        "--cert-file=/etc/kubernetes/ssl_old/kube-etcd-10-0-0-13.pem",
        "--peer-key-file",
        "/etc/kubernetes/ssl_old/kube-etcd-10-0-0-13-key.pem",
        "--client-cert-auth",
    ]
    # already moved: unchanged (ssl_old/ does not start with ssl/)
    assert K.ssl_old_args(out, "/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old") == out


def test_manifest_round_trip() -> None:
    d = {"kube-ca.pem": "a" * 64, "sub/x.pem": "b" * 64}
    assert K.parse_manifest(K.manifest_text(d)) == d


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (rke.NO_ETCD_HOST, K.RkeFailure.NO_ETCD),
        (rke.NO_ETCD_HOST_UNREACHABLE.format(hosts="[10.0.0.11]"), K.RkeFailure.ETCD_UNREACHABLE),
        (rke.BOTH_ETCD, K.RkeFailure.BOTH_ETCD),
        (rke.EXTERNAL_EMPTY["ca_cert"], K.RkeFailure.EXTERNAL_FIELD),
        (rke.EXTERNAL_EMPTY["key"], K.RkeFailure.EXTERNAL_FIELD),
        (rke.EXTERNAL_EMPTY["path"], K.RkeFailure.EXTERNAL_FIELD),
        (rke.PLANE_REPLACED, K.RkeFailure.PLANE_REPLACED),
        (
            "[etcd] Failed to connect to external etcd [https://x:2379] with the given certificates: bad",
            K.RkeFailure.EXTERNAL_REFUSED,
        ),
    ],
)
def test_rke_failures_are_classified_from_its_fatal_line(line: str, kind: K.RkeFailure) -> None:
    log = f"INFO[0000] Running RKE version: v1.2.7\nFATA[0011] {line}\n"
    got, todo = K.classify_rke(log, 1)
    assert got is kind
    assert line in todo  # RKE's own words are kept for the operator


def test_a_key_that_is_not_rsa_is_named_from_gos_panic() -> None:
    log = "INFO[0000] Running RKE version: v1.2.7\npanic: " + rke.CLIENT_KEY_NOT_RSA.format(
        type="*ecdsa.PrivateKey"
    )
    kind, todo = K.classify_rke(log + "\n\ngoroutine 1 [running]:\n", 2)
    assert kind is K.RkeFailure.CLIENT_KEY_NOT_RSA and "RSA" in todo


def test_quorum_lost_is_named_from_the_member_removal_warning() -> None:
    log = (
        "WARN[0030] [reconcile] Failed to delete etcd member [etcd-master1] from etcd cluster: "
        "etcdserver: request timed out\nFATA[0045] [etcd] Failed to bring up Etcd Plane: etcd cluster is "
        "unhealthy: hosts [10.0.0.13] failed to report healthy. Check etcd container logs on each host for "
        "more information\n"
    )
    kind, todo = K.classify_rke(log, 1)
    assert kind is K.RkeFailure.QUORUM_LOST and "etcd-dr recover" in todo


def test_timeout_and_unknown_failures() -> None:
    assert K.classify_rke("", -1, timed_out=True, timeout_s=30)[0] is K.RkeFailure.TIMEOUT
    kind, todo = K.classify_rke("FATA[0001] something new\n", 1)
    assert kind is K.RkeFailure.OTHER and "something new" in todo


def test_params_survive_the_journal() -> None:
    p = K.ApiCheckParams(("master3",), ("https://10.0.0.13:2379",), {"/registry/pods/": 15})
    s = Step("api-check", K.KubernetesAction.API_CHECK, None, "d", "pc", "r", params=p)
    plan = Plan("kubernetes", "c", "r", (s,))
    back = K.typed_plan(
        Plan("kubernetes", "c", "r", (Step(**{**s.__dict__, "params": p.to_json(), "action": "api-check"}),))
    )
    assert back.steps[0].params == p and back.steps[0].action is K.KubernetesAction.API_CHECK
    assert K.typed_plan(plan).steps[0].params == p
    with pytest.raises(ParamsError, match="not a Kubernetes action"):
        K.typed_plan(Plan("k", "c", "r", (Step("x", "etcd-run", None, "d", "p", "r"),)))


def test_counts_per_resource_and_what_is_missing() -> None:
    keys = [
        "/registry/pods/default/a",
        "/registry/pods/kube-system/b",
        "/registry/namespaces/default",
        "/other/x",
    ]
    counts = apicheck.count_by_resource(keys)
    assert counts == {"/registry/namespaces/": 1, "/registry/pods/": 2}
    short = apicheck.compare({"/registry/pods/": 3, "/registry/namespaces/": 1}, counts)
    assert apicheck.missing_sentence(short) == "/registry/pods/ 2 of 3"
    assert apicheck.compare(counts, {**counts, "/registry/pods/": 5}) == ()
