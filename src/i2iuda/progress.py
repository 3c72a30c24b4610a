"""One progress bar for every long job: description, bar, count, rate, elapsed, ETA, and a
free-text field for the current losses."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

# no emoji codes (an arm named x would print as one in "segment:x:"), no wrapping (a long
# message stays one line), no number colouring
console = Console(stderr=True, emoji=False, soft_wrap=True, highlight=False)


def say(text: str, style: str | None = None) -> None:
    """One line on the console, as text (names and paths are never read as markup), in ``style``
    (bold, dim, yellow, ...) if given."""
    console.print(text, style=style, markup=False)
T = TypeVar("T")


class Bar:
    """``with Bar(total, "train") as bar: ... bar.advance(1, loss=0.3)``; ``show=False`` draws
    nothing (inner loops, other DDP ranks) and keeps the call sites free of branches."""

    def __init__(self, total: int | None, description: str, unit: str = "it", completed: int = 0,
                 show: bool = True):
        self.unit = unit
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, transient=False, disable=not show,
        )
        self.task = self.progress.add_task(description, total=total, completed=completed, rate="", info="")

    def __enter__(self) -> "Bar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, n: int = 1, **info: float | str) -> None:
        task = self.progress.tasks[0]
        speed = task.speed
        rate = f"{speed:.2f} {self.unit}/s" if speed else ""
        text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        self.progress.update(self.task, advance=n, rate=rate, **({"info": text} if info else {}))


def track(items: Iterable[T], total: int | None, description: str, unit: str = "it") -> Iterator[T]:
    with Bar(total, description, unit) as bar:
        for item in items:
            yield item
            bar.advance(1)
