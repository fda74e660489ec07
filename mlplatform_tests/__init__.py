"""Tests of the mlplatform package."""
