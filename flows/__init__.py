"""Prefect flows: compose tasks, checkpoints, approvals and artifacts."""
