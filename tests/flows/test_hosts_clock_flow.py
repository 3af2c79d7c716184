"""The hosts-clock flow's Prefect side on a real Prefect server, with the hosts replaced by fake
executors (the real command on the lab: tests/lab/test_hosts_clock.py): the table artifact names the
flagged certificate with its fix, and a report with something flagged fails the run."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import yaml

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.executor import CommandResult


class FakeHost:
    """`date` reads this machine's clock; the certificate listing is one member certificate."""

    def __init__(self, host: str, pem: bytes) -> None:
        self.host, self.pem = host, pem

    def run(self, argv, **kw) -> CommandResult:
        import time

        argv = tuple(argv)
        out = ""
        if argv[0] == "date":
            out = f"{time.time():.9f}\n"
        elif argv[:2] == ("sh", "-c") and argv[3:4] == ("certs",):
            out = f"==> /etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem\n{self.pem.decode()}"
        return CommandResult(self.host, argv, 0, out, "", 0.0)

    def close(self) -> None:
        pass


def _artifacts(prefix: str) -> list:
    from prefect.client.orchestration import get_client

    async def read() -> list:
        async with get_client() as c:
            return await c.read_latest_artifacts()

    return [a for a in asyncio.run(read()) if (a.key or "").startswith(prefix)]


def test_a_certificate_dated_ahead_fails_the_run_and_is_in_the_artifact(
    prefect_harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import etcd_dr.hostrepair.clock as clock
    from flows.hosts import ClockTrouble, hosts_clock_flow

    for f in ("id", "kh", "ca.pem", "c.pem", "k.pem"):  # the inventory checks they exist; never read here
        (tmp_path / f).write_text("")
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(
        yaml.safe_dump(
            {
                "cluster": "flowclock",
                "audit_log": "audit.jsonl",
                "ssh": {"key_file": "id", "known_hosts": "kh"},
                "etcd": {"client": {"ca_cert": "ca.pem", "cert": "c.pem", "key": "k.pem"}},
                "hosts": [{"name": "master1", "address": "10.9.0.11", "roles": ["etcd"]}],
            }
        )
    )
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)
    pem = issue_cert(new_ca(), "kube-etcd-10-9-0-11", ips=["10.9.0.11"], not_before=ahead).cert_pem
    monkeypatch.setattr(clock, "executor_for", lambda inv, h, **kw: FakeHost(h.name, pem))
    with pytest.raises(ClockTrouble, match="x509: certificate has expired or is not yet valid"):
        hosts_clock_flow(inventory_path=str(inv_file))
    (art,) = _artifacts("etcd-hosts-clock-flowclock")
    rows = art.data if isinstance(art.data, list) else __import__("json").loads(art.data)
    bad = next(r for r in rows if r["what"].endswith("kube-etcd-10-9-0-11.pem"))
    assert bad["result"] == "not-yet-valid" and "etcd-dr cert renew --host master1" in bad["fix"]
    assert "1 certificate not valid" in (art.description or "")

    from prefect.logging.handlers import APILogHandler

    asyncio.run(APILogHandler.aflush())  # ship the runs' logs while the test server is still up
