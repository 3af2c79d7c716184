"""Prefect Block types: the cluster inventory and its credentials, stored in the Prefect server.

Each block builds the core's objects (etcd_dr.inventory.Inventory); the core never imports Prefect.
"""

from blocks.inventory import ClusterInventory, SSHCredentials

__all__ = ["ClusterInventory", "SSHCredentials"]
