"""Tests of the production deployment: its files and its topology on loopback."""
