"""Adaptive batch size: aim each backfill batch at a target duration, within bounds.

Why: a batch holds row locks until it commits, so its duration is what a concurrent writer may
wait; and every batch has a fixed cost (round trips, commit, fsync), so batches that are too
small waste throughput. The target duration (`targetBatchMilliseconds`) trades the two; the
sizer finds the batch size that meets it on this table, this machine, right now.

How: keep a smoothed (exponential moving average) cost per unit of batch size (a key span for
integer keys, rows for keyset iteration) and size the next batch to `target / cost`, but never
more than `MAX_GROWTH` times larger or `MAX_SHRINK` times smaller than the last one, and always
within [minimum, maximum]. A lock or statement timeout halves the size. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datamigration.core.steps import MAX_BATCH_SIZE

MAX_GROWTH = 1.5
MAX_SHRINK = 0.5
#: Weight of the newest observation in the moving average.
SMOOTHING = 0.5
#: The floor for the adaptive size (a smaller `batchSize` lowers it to that value).
DEFAULT_MINIMUM = 100


@dataclass
class BatchSizer:
    """The size of the next batch, adapted after each batch from its duration."""

    size: int
    target_seconds: float
    minimum: int = DEFAULT_MINIMUM
    maximum: int = MAX_BATCH_SIZE
    _cost: float | None = field(default=None, repr=False)  # smoothed seconds per unit

    def __post_init__(self) -> None:
        self.minimum = max(1, min(self.minimum, self.size))
        self.size = self._bounded(self.size)

    def observe(self, units: int, seconds: float) -> int:
        """Record that a batch of `units` took `seconds`; return the next size."""
        if units <= 0:
            return self.size
        cost = max(seconds, 1e-6) / units
        self._cost = cost if self._cost is None else SMOOTHING * cost + (1 - SMOOTHING) * self._cost
        ideal = self.target_seconds / self._cost
        ideal = min(ideal, self.size * MAX_GROWTH)
        ideal = max(ideal, self.size * MAX_SHRINK)
        self.size = self._bounded(round(ideal))
        return self.size

    def back_off(self) -> int:
        """After a lock or statement timeout: halve the size (and forget the cost estimate)."""
        self._cost = None
        self.size = self._bounded(self.size // 2)
        return self.size

    def _bounded(self, size: int) -> int:
        return max(self.minimum, min(self.maximum, size))
