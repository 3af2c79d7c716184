"""Kubernetes back after etcd answers: RKE's own files read (cluster.yml, cluster.rkestate), the
`rke up` that can succeed decided up front (the surviving etcd plane, or external etcd), run on the
deploy host, and the API checked. In the capability's shape: plan (pure), steps, run."""
