"""A lost master back after a recovery: run.py (`rejoin`: each host as a learner, then a voter, by
the learner's planner and steps; the old data dir read for diverged writes, then set aside)."""
