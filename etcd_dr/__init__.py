"""etcd-dr: etcd disaster recovery for Kubernetes control planes.

The core package: plain, typed Python with no Prefect import. flows/, tasks/ and blocks/ call into it.
"""

__version__ = "0.1.0"
