"""Timestamps as the journal writes them, and reading them back.

The estate's own tool writes UTC ISO 8601 with milliseconds and `Z` (`2025-10-25T12:00:00.000Z`,
JavaScript's `toISOString()`); every timestamp we write has that same shape.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`2025-09-14T21:03:11.042Z`: the journal's shape (milliseconds, UTC)."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def iso_utc(epoch: float) -> str:
    """`2025-09-14T21:03:11.042Z` of epoch seconds: the shape the estate's journal already uses."""
    return iso(datetime.fromtimestamp(epoch, UTC))


def parse_iso(text: str) -> float | None:
    """Epoch seconds of an ISO timestamp (naive ones are taken as UTC), None if unparseable."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
