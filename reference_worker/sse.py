"""Server-Sent Events framing (M0-W-1310, M0-W-1312).

Each event goes on the wire as `event: NAME\\ndata: JSON\\n\\n`. The JSON is written on
one line (json.dumps never emits a raw newline), so one `data:` line always suffices.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

EVENT_TYPES = ("started", "token", "metrics", "end", "error")
TERMINAL_EVENTS = ("end", "error")


def format_event(name: str, data: dict) -> bytes:
    """The bytes of one SSE event named `name` carrying `data` as compact JSON."""
    if name not in EVENT_TYPES:
        raise ValueError(f"not an M0 event type: {name!r}")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode("utf-8")


def format_comment(text: str) -> bytes:
    """An SSE comment line: SSE clients ignore it; it keeps a waiting stream visibly alive."""
    return f": {text}\n\n".encode("utf-8")


class Event(NamedTuple):
    name: str | None
    data: object
    arrived: float  # time.perf_counter() when its data line was read


def read_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events in lines of this framing (comments skipped), each as soon as its data line is
    read: what the benchmark and the tests, as clients, see arrive."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            yield Event(name, json.loads(line[len("data: "):]), time.perf_counter())
