"""The rehearsal's client: a data set written up front, then a writer thread that keeps writing
through the fault and the recovery, and records every attempt, acknowledged or not.

Each attempt puts a key no other attempt uses, so afterwards the recovered member alone tells what
happened to it: an acknowledged write that is missing is lost data (RPO), an unacknowledged one that
is there landed anyway (a timeout is "outcome unknown", not "refused"). The log is the truth; no
assumption about what etcd keeps is made (NOTES: measure the RPO, do not assume 0).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from etcd_dr.errors import EtcdDrError
from etcd_dr.etcd.client import EtcdClient

WRITE_TIMEOUT_S = 1.0  # one attempt, failover across the endpoints included: a short outage costs 1 s
DIAL_TIMEOUT_S = 0.5
INTERVAL_S = 0.005  # between two attempts ("a few ms apart")


class Phase(enum.StrEnum):
    DATASET = "dataset"  # written before the fault, each acknowledged
    WRITER = "writer"  # the writer thread, through the fault and the recovery


@dataclass(frozen=True)
class WriteRecord:
    """One put attempt: its key and value, when it was sent and answered (epoch seconds), and either
    the revision and endpoint that acknowledged it or the error (then error is not None)."""

    seq: int
    phase: Phase
    key: str
    value: str
    sent_at: float
    done_at: float
    revision: int | None = None
    endpoint: str | None = None
    error: str | None = None

    @property
    def acked(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "phase": str(self.phase)}


def put_once(client: EtcdClient, seq: int, phase: Phase, key: str, value: str, timeout: float) -> WriteRecord:
    """One attempt, recorded whatever its outcome."""
    sent = time.time()
    try:
        r = client.put(key, value, timeout=timeout)
    except EtcdDrError as e:
        return WriteRecord(seq, phase, key, value, sent, time.time(), error=_short(str(e)))
    return WriteRecord(seq, phase, key, value, sent, time.time(), revision=r.revision, endpoint=r.endpoint)


def write_dataset(client: EtcdClient, prefix: str, n: int, run_id: str) -> list[WriteRecord]:
    """n keys under <prefix>data/, each acknowledged (an unacknowledged one is retried under a new
    seq: the data set is the state before the fault, so it must be complete)."""
    out: list[WriteRecord] = []
    seq = 0
    for i in range(n):
        for _ in range(20):
            rec = put_once(client, seq, Phase.DATASET, f"{prefix}data/{i:06d}", f"d{i}-{run_id}", 5.0)
            seq += 1
            out.append(rec)
            if rec.acked:
                break
            time.sleep(0.2)
        else:
            raise EtcdDrError(f"the data set could not be written: key {i} refused 20 times ({rec.error})")
    return out


class Writer:
    """A thread putting <prefix>w/<seq> = <run_id>:<seq> every INTERVAL_S until stopped, each attempt
    with a short deadline across all the client's endpoints. Thread-safe accessors for the caller."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        run_id: str,
        *,
        interval_s: float = INTERVAL_S,
        timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.run_id = run_id
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._records: list[WriteRecord] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rehearsal-writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            key = f"{self.prefix}w/{seq:08d}"
            rec = put_once(self.client, seq, Phase.WRITER, key, f"{self.run_id}:{seq}", self.timeout_s)
            with self._cond:
                self._records.append(rec)
                self._cond.notify_all()
            seq += 1
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 30.0) -> tuple[WriteRecord, ...]:
        """Stop after the attempt in flight (bounded by its deadline); the whole log."""
        self._stop.set()
        self._thread.join(timeout)
        return self.records()

    def records(self) -> tuple[WriteRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def acked_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._records if r.acked)

    def wait_ack_after(self, t: float, timeout: float) -> WriteRecord | None:
        """The first acknowledged write answered after t (epoch), waiting up to timeout seconds."""
        end = time.monotonic() + timeout
        start = 0
        with self._cond:
            while True:
                for r in self._records[start:]:
                    if r.acked and r.done_at > t:
                        return r
                start = len(self._records)
                left = end - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return None
                self._cond.wait(min(left, 1.0))

    def wait_acks(self, n: int, timeout: float) -> bool:
        """Until n attempts were acknowledged in all (the writer runs before the fault)."""
        end = time.monotonic() + timeout
        with self._cond:
            while sum(1 for r in self._records if r.acked) < n:
                left = end - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 1.0))
            return True


def read_back(client: EtcdClient, prefix: str, timeout: float = 30.0) -> dict[str, str]:
    """Every key under prefix with its value, as the (recovered) member the client names has them
    (a linearizable read: the member must lead or follow a leader)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = client.range(prefix, end, timeout=timeout)
    return {kv.key.decode(): kv.value.decode() for kv in r.kvs}


def _short(msg: str, limit: int = 240) -> str:
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


__all__: Sequence[str] = ("Phase", "WriteRecord", "Writer", "put_once", "read_back", "write_dataset")
