"""``asset-sync dispatch --config FILE EVENT_FILE…``: deliver events without Kafka.

The same validation, dispatchers, batching and retry policy as the service; updates of one
asset go in file order, different assets concurrently. One JSON outcome line per event, in
input order; exit 0 when all were delivered, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from consumer.commands.validate_files import iter_events
from consumer.config import Config
from consumer.delivery.dispatcher import Dispatcher
from consumer.errors import UsageError
from consumer.events import Event, Rejection, parse_record
from consumer.outcome import Outcome


def read_events(paths: list[Path]) -> list[Event | Rejection]:
    items: list[Event | Rejection] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        items.extend(parse_record(raw) for _, raw in iter_events(data))
    return items


async def dispatch_all(config: Config, items: list[Event | Rejection]) -> list[Outcome]:
    dispatcher = Dispatcher(config)
    outcomes: dict[int, Outcome] = {}
    by_asset: dict[tuple[str, str, str], list[tuple[int, Event]]] = defaultdict(list)
    for index, item in enumerate(items):
        if isinstance(item, Rejection):
            outcomes[index] = Outcome("", "", False, 0, 0.0, item.reason, None, item.message())
        else:
            by_asset[item.asset_key].append((index, item))
    limit = asyncio.Semaphore(config.dispatch.max_in_flight)

    async def in_order(queue: list[tuple[int, Event]]) -> None:
        for index, event in queue:
            async with limit:
                outcomes[index] = await dispatcher.deliver(event)

    try:
        await asyncio.gather(*(in_order(queue) for queue in by_asset.values()))
    finally:
        await dispatcher.close()
    return [outcomes[i] for i in range(len(items))]


def dispatch_files(config: Config, paths: list[Path], out: TextIO) -> int:
    items = read_events(paths)
    outcomes = asyncio.run(dispatch_all(config, items))
    for item, outcome in zip(items, outcomes, strict=True):
        line = outcome.to_json()
        if isinstance(item, Event):
            line["event_id"], line["vendor"] = item.id, item.vendor
        print(json.dumps(line), file=out)
    return 0 if all(o.delivered for o in outcomes) else 1
