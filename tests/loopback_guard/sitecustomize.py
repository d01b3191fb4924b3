"""Loaded by every Python process the tests start (PYTHONPATH): see bluegreen_loopback_guard."""

import bluegreen_loopback_guard  # noqa: F401
