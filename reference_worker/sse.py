"""Server-Sent Events framing (M0-W-1310, M0-W-1312).

Each event goes on the wire as `event: NAME\\ndata: JSON\\n\\n`. The JSON is written on
one line (json.dumps never emits a raw newline), so one `data:` line always suffices.
"""
from __future__ import annotations

import json

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
