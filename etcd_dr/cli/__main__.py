"""`python -m etcd_dr.cli ...`: the same as the `etcd-dr` console script."""

import sys

from etcd_dr.cli import main

sys.exit(main())
