"""Dagster resources: the only code that reads or writes state."""
