"""Dagster definitions: thin assets over :mod:`mlplatform.core`, grouped by concern."""
