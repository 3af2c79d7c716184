"""Host repair: what the source incident's last hours went to after the cluster was rebuilt.

- `clock`: each host's clock against this machine's and every etcd/Kubernetes certificate on it
  judged by THAT host's clock (`etcd-dr hosts clock`), and a clock step where one is off (`--sync`);
- `plan`, `steps`, `run`: kubelet's sandbox loop cleaned (`etcd-dr hosts kubelet-cleanup`), in the
  capability's shape (pure planner, typed steps, one run()).
"""
