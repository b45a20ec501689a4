"""The result of delivering one event: the value the pipeline and ``dispatch`` share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from consumer.reasons import Reason


# The records made once or more per event (this one, Event, SourceRecord, HttpRequest and
# HttpResponse) are treated as values but not frozen: a frozen dataclass's __init__ sets each
# field through object.__setattr__, 3-4x the cost of a plain one (1.0 against 0.23 µs for 7
# fields), on the path every event takes (bench/RESULTS.md, issue 16).
@dataclass(slots=True)
class Outcome:
    """Delivered, or dead with a reason; ``error`` is one short line without secrets."""

    event_id: str
    vendor: str
    delivered: bool
    attempts: int
    seconds: float
    reason: Reason | None = None
    status: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = "delivered" if self.delivered else "dead_lettered"
        data["reason"] = str(self.reason) if self.reason else None
        data["seconds"] = round(self.seconds, 4)
        return data
