"""How long operations report what they are doing, without the core knowing who listens.

The CLI renders steps on stderr (a line per step with its duration, a spinner on a terminal);
the MCP server turns them into progress notifications; tests collect them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class StepRecord:
    name: str
    seconds: float = 0.0
    ok: bool | None = None
    detail: str = ""


class Progress(Protocol):
    def step(self, name: str, *, long: bool = False) -> contextlib.AbstractContextManager[StepRecord]: ...

    def note(self, message: str) -> None: ...


@dataclass
class RecordingProgress:
    """Keeps every step with its duration; the base for the other reporters."""

    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    listener: Callable[[str, StepRecord], None] | None = None

    @contextlib.contextmanager
    def step(self, name: str, *, long: bool = False) -> Iterator[StepRecord]:
        record = StepRecord(name)
        self.steps.append(record)
        self._emit("start", record)
        started = time.monotonic()
        try:
            yield record
        except BaseException as exc:
            record.ok = False
            record.detail = record.detail or type(exc).__name__
            raise
        else:
            record.ok = True
        finally:
            record.seconds = time.monotonic() - started
            self._emit("end", record)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self._emit("note", StepRecord(message))

    def _emit(self, event: str, record: StepRecord) -> None:
        if self.listener is not None:
            self.listener(event, record)


class NullProgress(RecordingProgress):
    pass
