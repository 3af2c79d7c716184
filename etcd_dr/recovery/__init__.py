"""Recovery after quorum loss, in the shape of every capability (README "Layout"):

plan.py      pure: ClusterState + inventory + fencing evidence -> Plan (the four paths)
steps.py     the vocabulary: RecoveryAction, a frozen params dataclass each, and its handler
run.py       observe, plan, confirm, lease, look again, execute, journal: what the CLI and the
             flow call (`recover`)
fencing.py   gathering fencing evidence and the partition probe (I/O); evidence.py its types
incident.py  pure: is the plan still the incident it was made for?
lease.py     one recovery per cluster: a lease on the cluster's own hosts
"""
