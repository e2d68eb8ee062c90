"""Doctest collection of this package: the same rule as met3r_metrics/conftest.py (skip a module whose optional
dependency is missing)."""

from met3r_metrics.conftest import pytest_ignore_collect  # noqa: F401 - pytest hook
