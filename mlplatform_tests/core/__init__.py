"""Tests of mlplatform.core."""
