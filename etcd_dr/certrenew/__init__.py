"""`etcd-dr cert renew`: a member's certificate reissued (same names and SANs, kube-ca, NotBefore a
few minutes back on the host's own clock), the old pair kept beside it, and the member restarted so
that it serves the new one, one host at a time and never where the restart would cost quorum.
plan.py decides (pure), steps.py carries it out, run.py is the entry point."""
