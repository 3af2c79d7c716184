"""RKE's own words: the refusals `rke up` prints, exactly as rancher/rke's source writes them.

One module so that the planner that predicts a refusal (etcd_dr.kubernetes.plan) and the lab's
stand-in `rke` that reproduces it say the same bytes. Read from rancher/rke (master, 2024-10):

- cluster/validation.go, ValidateHostCount: NO_ETCD_PLANE, NO_ETCD_PLANE_UNREACHABLE (when RKE
  dropped an etcd host whose SSH tunnel failed), INTERNAL_AND_EXTERNAL;
- cluster/validation.go, validateServicesOptions: the four EXTERNAL_* (checked in this order);
- cluster/reconcile.go: EtcdPlaneNodesReplacedErr, wrapped by ReconcileCluster as
  "Failed to reconcile etcd plane: %v" (PLANE_REPLACED);
- etcd itself (etcdserver/errors.go, ErrTimeout): REQUEST_TIMED_OUT, what a member remove (and any
  linearizable request) gets while quorum is lost;
- Go's runtime, for pki/services.go's type assertion of an external etcd key: CLIENT_KEY_NOT_RSA.

`rke up` prints a fatal error as logrus does: `FATA[0011] <message>` (FATAL_PREFIX + seconds).
"""

from __future__ import annotations

NO_ETCD_PLANE = (
    "Cluster must have at least one etcd plane host: please specify one or more etcd in cluster config"
)
# ValidateHostCount after hosts were dropped for a failed SSH tunnel: formatted with Go's %v of a
# []string, e.g. "[10.0.0.11]" (its loop returns at the first inactive host, etcd or not).
NO_ETCD_PLANE_UNREACHABLE = (
    "Cluster must have at least one etcd plane host: failed to connect to the following etcd host(s) {hosts}"
)
INTERNAL_AND_EXTERNAL = "Cluster can't have both internal and external etcd"
EXTERNAL_CA_EMPTY = "External CA Certificate for etcd can't be empty"
EXTERNAL_CERT_EMPTY = "External Client Certificate for etcd can't be empty"
EXTERNAL_KEY_EMPTY = "External Client Key for etcd can't be empty"
EXTERNAL_PATH_EMPTY = "External etcd path can't be empty"
PLANE_REPLACED_CAUSE = (
    "Etcd plane nodes are replaced. Stopping provisioning. Please restore your cluster from backup."
)
PLANE_REPLACED = f"Failed to reconcile etcd plane: {PLANE_REPLACED_CAUSE}"
REQUEST_TIMED_OUT = "etcdserver: request timed out"
# pki/services.go GenerateExternalEtcdCertificates type-asserts services.etcd.key to *rsa.PrivateKey
# (pki/cert ParsePrivateKeyPEM returns *ecdsa.PrivateKey for an EC key): Go's runtime panics with
# this, `panic: ` before it. {type} is the key's Go type, e.g. *ecdsa.PrivateKey.
CLIENT_KEY_NOT_RSA = "interface conversion: interface {{}} is {type}, not *rsa.PrivateKey"

# How `rke up` shows a fatal error (logrus text formatter, no TTY): FATA[<seconds since start>].
FATAL_PREFIX = "FATA"


def go_list(items: list[str] | tuple[str, ...]) -> str:
    """A []string as Go's %v prints it: [a b c]."""
    return "[" + " ".join(items) + "]"


def fatal(message: str, seconds: int = 0) -> str:
    """The line `rke up` ends with: `FATA[0011] <message>`."""
    return f"{FATAL_PREFIX}[{seconds:04d}] {message}"
