"""state.observe(known_down=...): a host a power driver just said is off is not dialed (the recovery's
fresh look under its lease costs no dial timeout for powered-off masters), on a real etcd."""

from __future__ import annotations

from etcd_dr.state import client_for, observe

from .conftest import Env


class Recording:
    """The real client, with the endpoints it was asked for Status recorded."""

    def __init__(self, client) -> None:
        self.client, self.asked = client, []

    def status(self, endpoint, *args, **kw):
        self.asked.append(endpoint)
        return self.client.status(endpoint, *args, **kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_known_down_host_is_not_dialed(env: Env) -> None:
    inv = env.inv
    with client_for(inv) as c:
        rec = Recording(c)
        live = observe(inv, check_ssh=False, client=rec)
        assert live.quorum and live.member("m1").status is not None and len(rec.asked) == 1
        rec.asked.clear()
        why = "powered off (IPMI: Chassis Power is off)"
        down = observe(inv, check_ssh=False, client=rec, known_down={"m1": why})
    assert rec.asked == []  # not dialed: a dead host would cost the dial timeout
    m1 = down.member("m1")
    assert m1.status is None and m1.etcd_error == why
    assert not down.quorum and down.voters_answering == 0
