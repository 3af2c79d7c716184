"""Progress of a long transfer on stderr: a bar on a terminal, plain lines (every 10 %) otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_SIZE_FOR_PROGRESS = 64 << 20  # small snapshots finish before a bar is worth drawing


class Progress:
    def __init__(self, what: str, total: int | None, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total or 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self.enabled = self.total >= MIN_SIZE_FOR_PROGRESS

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        frac = min(done / self.total, 1.0) if self.total else 0.0
        if self.tty:
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            width = 30
            bar = "#" * int(frac * width)
            rate = done / max(now - self.t0, 1e-6) / 1e6
            self.stream.write(
                f"\r{self.what} [{bar:<{width}}] {frac * 100:5.1f}% {done / 1e6:8.1f} MB {rate:6.1f} MB/s"
            )
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{self.what}: {done / 1e6:.0f} MB ({decile * 10}%)\n")
                self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
