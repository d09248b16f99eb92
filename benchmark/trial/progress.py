"""Progress of one trial for `train`: a tqdm bar on a terminal (step/total, the loss at
the last check, seconds per step, time left), plain lines elsewhere (a log file, CI): one
at the first step, then every 10% of the steps or every 30 s, whichever comes first, and
at the last step."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


class StepProgress:
    """Call `step(step, total, loss, seconds)` once per optimizer step (run_trial's
    on_step) and `write(line)` for lines that must not break the bar; `close()` at the end."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every_seconds: float = 30.0, every_share: float = 0.1, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_seconds = every_seconds
        self.every_share = every_share
        self.clock = clock
        self.bar = None
        self.started: float | None = None
        self.last_line = 0.0
        self.last_loss: float | None = None
        self.shares_done = 0  # whole every_share parts of the steps already reported

    def step(self, step: int, total: int, loss: float | None, seconds: float) -> None:
        now = self.clock()
        if self.started is None:  # the first step's own time counts; set-up does not
            self.started = now - seconds
        if loss is not None:
            self.last_loss = loss
        per_step = (now - self.started) / step  # evaluation included: what the user waits
        left = per_step * (total - step)
        if self.tty:
            self._bar_step(step, total)
            return
        shares = int(step / total / self.every_share + 1e-9)
        due = (step == 1 or step == total or now - self.last_line >= self.every_seconds
               or shares > self.shares_done)
        if due:
            self.shares_done = shares
            self.last_line = now
            loss = (f"loss {self.last_loss:.4f}" if self.last_loss is not None
                    else "loss not checked yet")
            print(f"  step {step}/{total} ({100 * step / total:.0f}%): {loss}, "
                  f"{per_step:.2f} s/step, {format_seconds(left)} left",
                  file=self.stream, flush=True)

    def _bar_step(self, step: int, total: int) -> None:
        if self.bar is None:
            import shutil

            from tqdm import tqdm

            # A terminal that reports a size of 0 x 0 (e.g. under `script`) would get no
            # bar from tqdm: then 100 x 24.
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=total, unit="step", file=self.stream, desc="  training",
                            ncols=min(size.columns or 100, 120), nrows=size.lines or 24,
                            leave=True)
        if self.last_loss is not None:
            self.bar.set_postfix_str(f"loss {self.last_loss:.4f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
