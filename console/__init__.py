"""The operator's console: `etcd-dr server` (one command that runs the Prefect server, serves every
deployment of every cluster, and receives Alertmanager's alerts). It sits above the core like flows/
and tasks/ do: etcd_dr/ never imports it (or Prefect); etcd_dr/cli/server.py imports it lazily."""
