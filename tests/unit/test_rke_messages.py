"""RKE's refusals as the source incident saw them (NOTES.md, "The source incident's error messages")."""

from etcd_dr.kubernetes import rkemessages as m


def test_fatal_lines_match_the_source_incident() -> None:
    assert m.fatal(m.NO_ETCD_PLANE) == (
        "FATA[0000] Cluster must have at least one etcd plane host: please specify one or more etcd in "
        "cluster config"
    )
    assert m.fatal(m.PLANE_REPLACED, 11) == (
        "FATA[0011] Failed to reconcile etcd plane: Etcd plane nodes are replaced. Stopping provisioning. "
        "Please restore your cluster from backup."
    )


def test_unreachable_etcd_host_is_formatted_as_go_prints_a_slice() -> None:
    msg = m.NO_ETCD_PLANE_UNREACHABLE.format(hosts=m.go_list(["10.0.0.11", "10.0.0.12"]))
    assert msg.endswith("failed to connect to the following etcd host(s) [10.0.0.11 10.0.0.12]")
