"""Append-only, hash-chained audit log (JSONL). Implemented by the audit work; see add_parser below."""
