"""SIGINT and SIGTERM around the steps that must not be cut in half."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("bluegreen.signals")


# --------------------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_deferred(*, deliver: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM back for the block, then deliver the first one as KeyboardInterrupt
    (or, with `deliver=False`, only log it: an emergency flip finishes and reports normally).

    For the few steps that must not be cut in half (a flip and its record, a restore). Outside the
    main thread signals cannot be handled here, and the block simply runs. A signal the process
    was started ignoring (under nohup, or in the background of a script) stays ignored.
    """
    caught: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    try:
        previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(s) is not signal.SIG_IGN}
    except ValueError:  # not the main thread
        yield caught
        return
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught and deliver:
        raise KeyboardInterrupt(f"interrupted by signal {caught[0]}")
    if caught:
        log.warning("signal %d arrived during the emergency flip; it finished first", caught[0])


def raise_on_sigterm() -> None:
    """Make SIGTERM interrupt like Ctrl-C does, so both run the same restore paths."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"interrupted by signal {signum}")

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)
