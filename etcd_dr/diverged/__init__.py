"""Writes an old member holds that the recovered cluster lacks: found before a rejoin sets the
member's data dir aside (etcd_dr.rejoin.run), exported and replayed after review (`etcd-dr diverged`).

compare: the pure rule; read: copy and serve the old member's db, read both sides, the report;
replay: the JSON-lines export and its reviewed replay; cli: `etcd-dr diverged export|replay`.
"""
