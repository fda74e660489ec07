"""Pure-Python core of the platform: no Dagster imports."""
