"""The receiver's decisions without HTTP or Prefect: a webhook checked field by field, alerts sorted
by cluster, one incident per cluster across repeats, fan-out and resends; the served clusters read
from one directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.alerts import (
    MIXIN_ALERTS,
    STALE_AFTER_S,
    BadRequest,
    Change,
    Incidents,
    Mapping,
    parse_notification,
    sort_alerts,
)
from console.clusters import inventory_path, load_clusters
from etcd_dr.errors import InputError
from tests.unit.inventory_sample import VALID, write_invdir

MAP = Mapping(frozenset(MIXIN_ALERTS), "cluster", frozenset({"prod", "dr"}))


def alert(name: str = "etcdNoLeader", cluster: str = "prod", status: str = "firing", fp: str = "f1") -> dict:
    return {"status": status, "labels": {"alertname": name, "cluster": cluster, "instance": "m1"},
            "annotations": {}, "startsAt": "2026-12-05T19:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": fp}  # fmt: skip


def body(*alerts: dict, status: str = "firing", **over: object) -> bytes:
    d = {"version": "4", "status": status, "receiver": "etcd-dr", "groupKey": "{}:{}", "truncatedAlerts": 0,
         "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
         "alerts": list(alerts), **over}  # fmt: skip
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"{not json", 400, "body: not JSON"),
        (b"[]", 422, "body: expected a JSON object"),
        (body(version="3"), 422, "version: '3'"),
        (body(status="burning"), 422, "status: 'burning' is not firing or resolved"),
        (json.dumps({"version": "4", "status": "firing"}).encode(), 422, "alerts: missing"),
        (
            body({"status": "firing", "labels": {"cluster": "prod"}}),
            422,
            "alerts[0].labels.alertname: missing",
        ),
        (
            body({"status": "firing", "labels": {"alertname": 1}}),
            422,
            "alerts[0].labels: expected an object of",
        ),
        (body(alert(), {"status": "firing"}), 422, "alerts[1].labels: missing"),
    ],
)
def test_a_bad_notification_is_refused_naming_the_field(raw: bytes, status: int, words: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_notification(raw, "application/json")
    assert e.value.status == status and words in str(e.value), str(e.value)


def test_content_type_and_mapping() -> None:
    with pytest.raises(BadRequest) as e:
        parse_notification(body(alert()), "text/plain")
    assert e.value.status == 415
    no_label = {**alert(), "labels": {"alertname": "etcdNoLeader"}}
    raw = body(alert(), alert("etcdHighFsyncDurations"), alert(cluster="gamma"), no_label)
    n = parse_notification(raw, "application/json")
    s = sort_alerts(n, MAP)
    assert list(s.by_cluster) == ["prod"] and len(s.by_cluster["prod"]) == 1
    assert s.ignored == [
        "etcdNoLeader: cluster='gamma' is no served cluster",
        "etcdNoLeader: no 'cluster' label; the receiver cannot tell which cluster it is",
    ]


def test_one_incident_per_cluster_across_repeats_fanout_and_resends(tmp_path: Path) -> None:
    inc = Incidents(tmp_path / "inc.json")
    n = parse_notification(body(alert(fp="a"), alert("etcdInsufficientMembers", fp="b")), None)
    first = inc.apply("prod", sort_alerts(n, MAP).by_cluster["prod"], now=1000)
    assert [c.change for c in first] == [Change.OPENED]
    assert first[0].alerts == ("etcdInsufficientMembers", "etcdNoLeader")
    for _ in range(50):  # repeats and resends: nothing new
        assert inc.apply("prod", sort_alerts(n, MAP).by_cluster["prod"], now=1001) == []
    inc.commit()
    again = Incidents(tmp_path / "inc.json")  # a restarted receiver keeps the incident
    half = parse_notification(
        body(alert(status="resolved", fp="a"), alert("etcdInsufficientMembers", fp="b")), None
    )
    assert again.apply("prod", sort_alerts(half, MAP).by_cluster["prod"], now=1002) == []
    done = parse_notification(body(alert(status="resolved", fp="b")), None)
    (closed,) = again.apply("prod", sort_alerts(done, MAP).by_cluster["prod"], now=1003)
    assert (closed.change, closed.incident) == (Change.RESOLVED, first[0].incident)
    # a firing alert after the resolution is a new incident; one whose resolution was lost, too
    (new,) = again.apply("prod", sort_alerts(n, MAP).by_cluster["prod"], now=1004)
    assert new.change is Change.OPENED and new.incident != first[0].incident
    (newer,) = again.apply("prod", sort_alerts(n, MAP).by_cluster["prod"], now=1005 + STALE_AFTER_S)
    assert newer.change is Change.OPENED and newer.incident != new.incident
    # a resolved alert of no open incident changes nothing
    assert Incidents(None).apply("dr", sort_alerts(done, MAP).by_cluster["prod"]) == []


def test_clusters_from_one_directory(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        d = write_invdir(tmp_path / name)
        (d / "inventory.yaml").write_text(VALID.replace("cluster: lab", f"cluster: {name}"))
    (tmp_path / "a" / "inventory.yaml").write_text(
        VALID.replace("cluster: lab", "cluster: a\nautomatic_recovery: true").replace("rehearsal: true", "")
    )
    cl = load_clusters(tmp_path)
    assert list(cl) == ["a", "b"]
    assert (cl["a"].automatic_recovery, cl["a"].rehearsal, cl["b"].automatic_recovery, cl["b"].rehearsal) == (
        True, False, False, True,
    )  # fmt: skip
    assert inventory_path("b", tmp_path) == tmp_path / "b" / "inventory.yaml"
    with pytest.raises(InputError, match=r"cluster: 'c' is not one of a, b"):
        inventory_path("c", tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        load_clusters(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no inventory"):
        load_clusters(tmp_path / "empty")


def test_incident_open_reads_the_receivers_file(tmp_path: Path) -> None:
    from console.alerts import incident_open

    inc = Incidents(tmp_path / "inc.json")
    n = parse_notification(body(alert(fp="a")), None)
    (opened,) = inc.apply("prod", sort_alerts(n, MAP).by_cluster["prod"])
    inc.commit()
    assert incident_open(tmp_path / "inc.json", "prod", opened.incident) is True
    assert incident_open(tmp_path / "inc.json", "prod", "another") is False
    assert incident_open(tmp_path / "inc.json", "dr", opened.incident) is False
    assert incident_open(tmp_path / "missing.json", "prod", opened.incident) is None


def test_the_servers_secrets_from_files_never_echoed(tmp_path: Path) -> None:
    from console.server import read_api_auth, read_token

    (tmp_path / "auth").write_text("u:p4ss\n")
    assert read_api_auth(str(tmp_path / "auth")) == "u:p4ss"
    (tmp_path / "bad").write_text("no-colon-secret\n")
    with pytest.raises(InputError, match="expected one line `user:password`") as e:
        read_api_auth(str(tmp_path / "bad"))
    assert "no-colon-secret" not in str(e.value)
    assert read_token(None, {"ETCD_DR_ALERT_TOKEN": " t0k "}) == "t0k"
    with pytest.raises(InputError, match="no alert token"):
        read_token(None, {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_token(str(tmp_path / "empty"))
