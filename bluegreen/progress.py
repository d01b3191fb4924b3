"""How long operations report what they are doing, without the core knowing who listens.

The CLI renders steps on stderr (a line per step with its duration, a spinner on a terminal);
the MCP server turns them into progress notifications; tests collect them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TextIO


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


_SPINNER = "|/-\\"


class TerminalProgress(RecordingProgress):
    """A line per step with its duration on stderr; a spinner while a long step runs on a TTY."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.tty = stream.isatty()
        self._stop = threading.Event()
        self._spinner: threading.Thread | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def step(self, name: str, *, long: bool = False) -> Iterator[StepRecord]:
        with super().step(name, long=long) as record:
            if long and self.tty:
                self._start_spinner(name)
            elif not self.tty:
                self._write(f"  .. {name}\n")
            try:
                yield record
            finally:
                self._stop_spinner()
        # Only reached on success; failures are rendered in `_emit`.

    def _emit(self, event: str, record: StepRecord) -> None:
        if event == "end":
            self._stop_spinner()
            mark = "ok" if record.ok else "FAILED"
            clear = "\r\033[K" if self.tty else ""
            self._write(f"{clear}  {mark:>6} {record.name} ({record.seconds:.1f}s)\n")
        elif event == "note":
            self._write(f"         {record.name}\n")

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def _start_spinner(self, name: str) -> None:
        self._stop.clear()
        started = time.monotonic()

        def spin() -> None:
            i = 0
            while not self._stop.wait(0.1):
                elapsed = time.monotonic() - started
                self._write(f"\r\033[K  {_SPINNER[i % 4]:>6} {name} ({elapsed:.0f}s)")
                i += 1

        self._spinner = threading.Thread(target=spin, daemon=True)
        self._spinner.start()

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._stop.set()
            self._spinner.join()
            self._spinner = None

    def summary(self) -> str:
        """A table of every step and its duration, for the end of a long command."""
        if not self.steps:
            return ""
        width = max(len(s.name) for s in self.steps)
        lines = [f"  {'step':<{width}}  {'result':<6}  seconds"]
        for s in self.steps:
            result = "ok" if s.ok else ("failed" if s.ok is False else "-")
            lines.append(f"  {s.name:<{width}}  {result:<6}  {s.seconds:7.1f}")
        total = sum(s.seconds for s in self.steps)
        lines.append(f"  {'total':<{width}}  {'':<6}  {total:7.1f}")
        return "\n".join(lines)
