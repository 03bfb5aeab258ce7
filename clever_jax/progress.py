"""Progress and ETA of a long pass (scoring bags, reading a features file), logged now and then."""

from __future__ import annotations

import time

from absl import logging


class Progress:
    """Logs `done/total unit`, the rate and the ETA of a pass, at most every `every_s` seconds."""

    def __init__(self, total: float, label: str, unit: str = "bags", every_s: float = 30.0):
        self.total, self.label, self.unit, self.every_s = total, label, unit, every_s
        self.start = self.last = time.perf_counter()

    def update(self, done: float) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s or done >= self.total or done <= 0:
            return
        self.last, rate = now, done / (now - self.start)
        logging.info("%s: %.0f/%.0f %s (%.0f%%), %.1f %s/s, ETA %.0f s", self.label, done, self.total, self.unit,
                     100 * done / self.total, rate, self.unit, (self.total - done) / rate)
