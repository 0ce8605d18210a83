"""Reconnect waits that grow, carry jitter, and reset after a healthy run."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter on the upper half, capped."""

    def __init__(self, initial: float = 1.0, cap: float = 60.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._next = initial
        self.attempts = 0

    def next(self) -> float:
        """The next wait in seconds."""
        base = self._next
        self._next = min(self._next * self.factor, self.cap)
        self.attempts += 1
        # Jitter spreads reconnects of many cameras that died together (a switch reboot).
        return min(self.cap, base * (0.5 + random.random() / 2))

    def reset(self) -> None:
        """Start again from the initial wait."""
        self._next = self.initial
        self.attempts = 0
