"""Progress of an audit's stages, shown the way the output is read: a `rich` display (stage,
bar, rows, elapsed, ETA) on a terminal; plain, flushed lines when piped (CI logs, Prefect
workers); nothing at all from the library by default. No third-party (tqdm) bars."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Progress:
    """Silent. `stage(name, total)` is a context manager yielding `advance(n)`, to call as
    `n` more of `total` rows are done."""

    @contextmanager
    def stage(self, name: str, total: int | None = None):
        yield _ignore

    def close(self) -> None:
        pass


def _ignore(n: int = 1) -> None:
    pass


class LineProgress(Progress):
    """One line per finished stage, and for long stages a line every `every_s` seconds:
    `[trainguard] embeddings: 2048/9000 rows (23%), 14 s, about 47 s left`."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stdout
        self.every_s = every_s

    @contextmanager
    def stage(self, name: str, total: int | None = None):
        started = last = time.monotonic()
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if total and now - last >= self.every_s and done < total:
                last = now
                self._line(f"{name}: {done}/{total} rows ({done / total:.0%}), "
                           f"{now - started:.0f} s, about {eta(started, now, done, total):.0f} "
                           "s left")
        yield advance
        rows = f" ({total} rows)" if total else ""
        self._line(f"{name} done in {time.monotonic() - started:.1f} s{rows}")

    def _line(self, text: str) -> None:
        print(f"[trainguard] {text}", file=self.stream, flush=True)


class RichProgress(Progress):
    """A live `rich` display, one task per stage."""

    def __init__(self, console=None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Display,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.display = Display(TextColumn("{task.description:<12}"), BarColumn(),
                               MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(),
                               TextColumn("ETA"), TimeRemainingColumn(), console=console,
                               transient=False)
        self.display.start()

    @contextmanager
    def stage(self, name: str, total: int | None = None):
        task = self.display.add_task(name, total=total or 1)
        try:
            yield lambda n=1: self.display.advance(task, n)
        finally:
            self.display.update(task, completed=total or 1)

    def close(self) -> None:
        self.display.stop()


def eta(started: float, now: float, done: int, total: int) -> float:
    return (now - started) / done * (total - done) if done else float("nan")


def for_output(stream=None) -> Progress:
    """Rich on a terminal, lines otherwise."""
    stream = stream or sys.stdout
    return RichProgress() if stream.isatty() else LineProgress(stream)
