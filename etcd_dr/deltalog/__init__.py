"""The delta log: every revision of a cluster after a snapshot, kept on this machine as it is
written (segment files, each with its span of revisions and a checksum), copied off-site once a
segment is sealed, and replayed onto a restored snapshot to bring it to a point in time.

    segment   one file's format: writer, reader (checksum), Event/Record
    log       the directory: segments, spans, records(start, end) with no gap and no duplicate
    stream    the watcher (`etcd-dr backup stream`): resume, failover, compaction, lag status
    replay    roll a snapshot forward through the log in a throwaway etcd, verify, snapshot it
"""

from etcd_dr.deltalog.log import DeltaLog
from etcd_dr.deltalog.segment import Event, GapError, Record, SegmentError, SegmentInfo, SegmentWriter

__all__ = ["DeltaLog", "Event", "GapError", "Record", "SegmentError", "SegmentInfo", "SegmentWriter"]
