"""Progress lines for long loops: done/total, rate and ETA, e.g.

    transformer: step 250/500 (50%), 1.49 steps/s, ETA 2m48s | loss 3.21, accuracy 0.123
    sampling: 40/100 images (40%), 12.3 images/s, ETA 5s

The rate is the average since the loop began (or resumed), so it settles as the loop goes: a
first batch that includes compilation skews the first lines only.
"""

from __future__ import annotations

import math
import time

from absl import logging


def duration(seconds: float) -> str:
    """`42s`, `2m48s` or `1h02m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Logs `name: [step ]done/total unit (pct), rate unit/s, ETA t[ | details]`.

    `update` logs at most every `every_s` seconds, always at the last item, and whenever
    `force` is set (the training loop forces its log_every steps). `start` is where a resumed
    loop begins.
    """

    def __init__(self, name: str, total: int, unit: str, every_s: float = 10.0, start: int = 0,
                 step_prefix: bool = False):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.step_prefix = step_prefix
        self._began, self._start = time.monotonic(), start
        self._last_time = self._began

    def update(self, done: int, details: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and done < self.total and now - self._last_time < self.every_s:
            return
        elapsed, advanced = now - self._began, done - self._start
        rate = advanced / elapsed if elapsed > 0 and advanced > 0 else math.nan
        counted = f"step {done}/{self.total}" if self.step_prefix else f"{done}/{self.total} {self.unit}"
        line = f"{self.name}: {counted} ({100 * done / max(self.total, 1):.0f}%)"
        if math.isfinite(rate):
            line += f", {rate:.3g} {self.unit}/s"
            if done < self.total:
                line += f", ETA {duration((self.total - done) / rate)}"
        if details:
            line += f" | {details}"
        logging.info("%s", line)
        self._last_time = now
