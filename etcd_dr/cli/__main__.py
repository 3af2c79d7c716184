"""`python -m etcd_dr.cli ...`: the same as the `etcd-dr` console script."""

from etcd_dr.cli import run

run()
