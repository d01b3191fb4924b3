"""Progress and tables on a terminal (rich): what people read on stderr."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from bluegreen.model.progress import RecordingProgress, StepRecord


class TerminalProgress(RecordingProgress):
    """A line per step with its duration on stderr, drawn by `rich` on a terminal (a spinner while
    a long step runs, coloured results, a table at the end); plain lines when stderr is not a
    terminal (logs, CI, pipes), so what scripts read does not change with the library."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.tty = stream.isatty()
        self.console = Console(file=stream, highlight=False, soft_wrap=True) if self.tty else None
        self._status: Status | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def step(self, name: str, *, long: bool = False) -> Iterator[StepRecord]:
        with super().step(name, long=long) as record:
            if long and self.console is not None:
                self._status = self.console.status(escape(name), spinner="dots")
                self._status.start()
            elif self.console is None:
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
            if self.console is not None:
                style = "green" if record.ok else "bold red"
                with self._lock:
                    self.console.print(f"  [{style}]{mark:>6}[/] {escape(record.name)} "
                                       f"[dim]({record.seconds:.1f}s)[/]")
            else:
                self._write(f"  {mark:>6} {record.name} ({record.seconds:.1f}s)\n")
        elif event == "note":
            if self.console is not None:
                with self._lock:
                    self.console.print(f"         {escape(record.name)}")
            else:
                self._write(f"         {record.name}\n")

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def summary(self) -> str:
        """A table of every step and its duration, for the end of a long command."""
        if not self.steps:
            return ""
        rows = [(s.name, "ok" if s.ok else ("failed" if s.ok is False else "-"), f"{s.seconds:.1f}")
                for s in self.steps]
        total = f"{sum(s.seconds for s in self.steps):.1f}"
        if self.console is not None:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            table.add_column("step")
            table.add_column("result")
            table.add_column("seconds", justify="right")
            for name, result, seconds in rows:
                table.add_row(escape(name), f"[{'green' if result == 'ok' else 'red'}]{result}[/]", seconds)
            table.add_section()
            table.add_row("total", "", total)
            return _to_text(table, self.console)
        width = max(len(name) for name, _, _ in rows)
        lines = [f"  {'step':<{width}}  {'result':<6}  seconds"]
        lines += [f"  {name:<{width}}  {result:<6}  {float(seconds):7.1f}" for name, result, seconds in rows]
        lines.append(f"  {'total':<{width}}  {'':<6}  {float(total):7.1f}")
        return "\n".join(lines)


def _to_text(renderable: Any, console: Console) -> str:
    """Render with the console's settings (colours, width) into a string the caller writes."""
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().rstrip("\n")


def status_table(data: dict[str, Any], stream: TextIO) -> str | None:
    """`bluegreen status` as a rich table when `stream` is a terminal; None otherwise (the caller
    prints its plain text lines, which scripts and logs rely on)."""
    if not stream.isatty():
        return None
    console = Console(file=stream, highlight=False)
    live = data.get("live") or "unknown"
    title = f"stack {data['stack']}: live {live}, declared {data['declared']}, standby {data['standby']}"
    if data.get("drift"):
        title += "  [bold red]DRIFT: HAProxy and stack config disagree[/]"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("", "colour", "host", "health", "release", "sha", "pm2", "haproxy"):
        table.add_column(column)
    for color, c in data["colors"].items():
        if c["healthy"]:
            health = f"[green]{c['statusCode'] or '-'} {c['latencyMs'] or 0:.0f}ms[/]"
        else:
            health = "[bold red]" + ("DOWN" if c["reachable"] else "UNREACHABLE") + "[/]"
        pm2 = ",".join(f"{p.get('status')}" for p in c["pm2"]) or "-"
        table.add_row("*" if color == data.get("live") else "", color, escape(str(c["host"])), health,
                      escape(c["release"] or "-"), (c["sha"] or "-")[:7], escape(pm2),
                      escape(str((c["haproxy"] or {}).get("status", "-"))))
    lines = [_to_text(table, console)]
    for color, c in data["colors"].items():
        lines += [f"  ! {color}: {escape(str(e))}" for e in c["errors"]]
    return "\n".join(lines)
