"""Events (source and id) delivered recently, so a producer retry or replay is skipped.

A time window and a size cap bound the memory; this is a per-process courtesy that saves
vendor calls, not a guarantee (another process, or a restart, does not know these ids).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

MAX_IDS = 200_000


class RecentIds:
    def __init__(
        self, window_s: float, clock: Callable[[], float] = time.monotonic, max_ids: int = MAX_IDS
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.max_ids = max_ids
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def add(self, event_id: Hashable) -> None:
        if self.window_s <= 0:
            return
        self._seen[event_id] = self.clock()
        self._seen.move_to_end(event_id)
        self._expire()

    def seen(self, event_id: Hashable) -> bool:
        if self.window_s <= 0:
            return False
        self._expire()
        return event_id in self._seen

    def _expire(self) -> None:
        horizon = self.clock() - self.window_s
        while self._seen and (
            len(self._seen) > self.max_ids or next(iter(self._seen.values())) < horizon
        ):
            self._seen.popitem(last=False)
