"""Training progress: rich bars on a terminal, plain lines elsewhere.

On a terminal (the bars go to stderr), each epoch gets a bar ``epoch k/N`` with the running
loss, KL, β, frames per second, the time spent and an ETA for the whole run (the epoch's
remaining batches and the epochs after it at the current speed; validation time is not
counted); the validation pass and the importance-sampled NLL pass get their own bars.

Off a terminal (a log file, a batch job), a bar would print nothing useful, so one plain line
is printed every ``log_every`` optimizer steps or every ``log_minutes`` minutes (default: one
a minute), e.g. ``epoch 3/100 batch 40/229 step 498 loss 4.2312 KL 0.8120 β 0.0667
 1523 frames/s elapsed 2m05s ETA 1h12m``. ``quiet`` prints neither.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn,
)
from rich.text import Text

__all__ = ["make_progress", "tracked"]


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _remaining(completed: float, total: float | None, elapsed: float | None,
               fields: dict[str, Any]) -> float | None:
    """Seconds left: the task's remaining items, plus ``fields["after"]`` items of later
    epochs, at the speed so far. With ``fields["budget_s"]`` (what ``--max-time`` left when
    the task started) the later epochs are only those the budget reaches: the run ends after
    the epoch during which it is spent (``fields["epoch_items"]`` items an epoch)."""
    if not completed or not elapsed or total is None:
        return None
    rate = elapsed / completed
    this_epoch = rate * (total - completed)
    later = rate * fields.get("after", 0)
    budget = fields.get("budget_s")
    epoch_s = rate * fields.get("epoch_items", total)
    if budget is not None and epoch_s > 0:
        left_after_this_epoch = budget - elapsed - this_epoch
        later = min(later, max(0, math.ceil(left_after_this_epoch / epoch_s)) * epoch_s)
    return this_epoch + later


class _ETA(ProgressColumn):
    def render(self, task: Task) -> Text:
        started = task.fields.get("started_at", 0)
        eta = _remaining(task.completed - started, task.total - started if task.total else None,
                         task.elapsed, task.fields)
        return Text(f"ETA {_clock(eta)}", style="progress.remaining")


class _Stats(ProgressColumn):
    def render(self, task: Task) -> Text:
        f = task.fields
        if "loss" not in f:
            return Text("")
        return Text(f"loss {f['loss']:.4f}  KL {f['kl']}  β {f['beta']:.3g}  "
                    f"{f['fps']:.0f} frames/s")


class PlainProgress:
    """The part of rich's ``Progress`` that training uses, printing one plain line every
    ``every`` updates of a training task or every ``minutes`` minutes instead of bars."""

    def __init__(self, console: Console, every: int = 0, minutes: float = 1.0) -> None:
        self.console, self.every, self.minutes = console, every, minutes
        self.tasks: dict[int, dict[str, Any]] = {}
        self.last_line = time.perf_counter()
        self.run_started = time.perf_counter()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = dict(description=description, total=total, completed=completed,
                                   first=completed, started=time.perf_counter(), fields=fields,
                                   updates=0)
        return task_id

    def update(self, task_id: int, advance: float = 0, **fields: Any) -> None:
        task = self.tasks[task_id]
        task["completed"] += advance
        task["fields"].update(fields)
        task["updates"] += 1
        now = time.perf_counter()
        by_steps = self.every and "loss" in task["fields"] and task["updates"] % self.every == 0
        by_time = self.minutes and now - self.last_line >= 60 * self.minutes
        if by_steps or by_time:
            self.console.print(self.line(task), highlight=False, soft_wrap=True)
            self.last_line = now

    def remove_task(self, task_id: int) -> None:
        self.tasks.pop(task_id, None)

    def line(self, task: dict[str, Any]) -> str:
        f, now = task["fields"], time.perf_counter()
        done = task["completed"] - task["first"]
        eta = _remaining(done, None if task["total"] is None else task["total"] - task["first"],
                         now - task["started"], f)
        parts = [task["description"], f"batch {task['completed']:.0f}/{task['total']:.0f}"]
        if "loss" in f:
            if "step" in f:
                parts.append(f"step {f['step']}")
            parts += [f"loss {f['loss']:.4f}", f"KL {f['kl']}", f"β {f['beta']:.3g}",
                      f"{f['fps']:.0f} frames/s"]
        parts += [f"elapsed {_clock(now - self.run_started)}", f"ETA {_clock(eta)}"]
        return "  ".join(parts)


def make_progress(*, quiet: bool, log_every: int = 0, log_minutes: float = 1.0,
                  console: Console | None = None) -> Progress | PlainProgress:
    """Bars on a terminal (or nothing when ``quiet``), :class:`PlainProgress` off one."""
    console = console or Console(stderr=True)
    if not quiet and not console.is_terminal:
        if console.stderr and console.file is None:  # our own: a log line is never wrapped
            console = Console(stderr=True, soft_wrap=True)
        return PlainProgress(console, log_every, log_minutes)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Stats(),
        TimeElapsedColumn(),
        _ETA(),
        console=console,
        disable=quiet,
    )


def tracked(bar: Progress | PlainProgress, batches: Iterable[Any], total: int,
            description: str) -> Iterator[Any]:
    """``batches``, advancing a bar of their own (removed at the end) as each is used."""
    task = bar.add_task(description, total=total)
    try:
        for batch in batches:
            yield batch
            bar.update(task, advance=1)
    finally:
        bar.remove_task(task)
