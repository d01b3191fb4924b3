"""Timestamps as the journal writes them (UTC, ISO 8601, `Z`), and reading them back."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`2025-09-14T21:03:11Z`: the timestamp shape the journal uses."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(epoch: float) -> str:
    """`2025-09-14T21:03:11Z`: the timestamp shape the existing journal already uses."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float | None:
    """Epoch seconds of an ISO timestamp (naive ones are taken as UTC), None if unparseable."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
