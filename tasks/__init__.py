"""Prefect tasks: thin wrappers over the core (etcd_dr), each returning the core's typed result."""
