"""Batching for vendors whose update call takes many assets (Autodesk ``batch-patch``).

Attempts that are ready together for the same batch key (project) share one request: a batch
goes out when it is full or after a short linger. Each attempt gets its own event's result.
When a vendor refuses a whole batch (a 400), the batch is split in halves and sent again, so
one bad asset never dead-letters its neighbours.
"""

from __future__ import annotations

import asyncio

from consumer.errors import AuthFailedError, DeliveryError, PermanentError
from consumer.events import Event
from consumer.telemetry import metrics
from consumer.vendors.base import Result, VendorClient

Waiting = tuple[Event, "asyncio.Future[Result]"]


class Batcher:
    def __init__(self, client: VendorClient, max_size: int, linger_s: float) -> None:
        self.client = client
        self.max_size = max_size
        self.linger_s = linger_s
        self._pending: dict[str, list[Waiting]] = {}
        self._assets: dict[str, set[str]] = {}  # asset ids in each pending batch
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, event: Event) -> Result:
        """Add the event to its group's batch and wait for its own result."""
        key = self.client.batch_key(event)
        if event.asset_id in self._assets.get(key, ()):
            self._flush(key)  # one body cannot carry two updates of the same asset
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((event, future))
        self._assets.setdefault(key, set()).add(event.asset_id)
        if len(batch) >= self.max_size:
            self._flush(key)
        elif len(batch) == 1:
            self._timers[key] = asyncio.get_running_loop().call_later(
                self.linger_s, self._flush, key
            )
        return await future

    def _flush(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, None)
        self._assets.pop(key, None)
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Waiting]) -> None:
        metrics.BATCH_SIZE.labels(self.client.name).observe(len(batch))
        try:
            results = await self.client.send([event for event, _ in batch])
        except DeliveryError as error:
            results = [error] * len(batch)
        except Exception as error:  # never leave an attempt waiting forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            raise
        whole = results[0]
        if (
            len(batch) > 1
            and isinstance(whole, PermanentError)
            and not isinstance(whole, AuthFailedError)
            and all(r is whole for r in results)
        ):
            middle = len(batch) // 2
            await asyncio.gather(self._send(batch[:middle]), self._send(batch[middle:]))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
