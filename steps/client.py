"""A small HTTP/SSE client for a worker under test, with a timeout on every wait.

The SSE reader is written here rather than taken from sseclient-py because the harness
needs what a general client hides: the raw bytes of every event (to check that each one is
complete UTF-8 on its own, M0-W-1824) and the moment each event arrived (to tell a live
stream from a buffered one, and one job's tokens from another's, M0-W-1301).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import requests

#: Seconds to wait for a connection and for each read; a worker slower than this fails.
DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Event:
    """One SSE event as received: its name, raw data bytes, parsed JSON and arrival time."""

    name: str
    raw: bytes
    arrived: float
    data: object = None
    decode_error: str | None = None


@dataclass
class Stream:
    """The answer to POST /execute: status, headers, body (when not a stream) and events."""

    status: int
    content_type: str
    body: object = None
    events: list[Event] = field(default_factory=list)
    sent: float = 0.0
    closed: float | None = None
    read_error: str | None = None
    _response: requests.Response | None = None
    _reader: object = None

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def tokens(self) -> list[Event]:
        return [e for e in self.events if e.name == "token"]

    @property
    def text(self) -> str:
        return "".join(str(e.data.get("t", "")) for e in self.tokens if isinstance(e.data, dict))

    @property
    def terminal(self) -> Event | None:
        """The first `end` or `error` event, if any arrived."""
        return next((e for e in self.events if e.name in ("end", "error")), None)

    @property
    def token_ids(self) -> list | None:
        """Token ids when the worker sends them (an allowed extra field), else None."""
        ids = [e.data.get("token_id") for e in self.tokens if isinstance(e.data, dict)]
        return ids if ids and all(isinstance(i, int) for i in ids) else None

    def seed_reported(self):
        """The `seed` the worker put in any event payload, or None."""
        for e in self.events:
            if isinstance(e.data, dict) and "seed" in e.data:
                return e.data["seed"]
        return None

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


def parse_events(lines, clock=time.monotonic):
    """Yield `Event`s from an iterable of raw lines (bytes, without line endings).

    Follows the SSE framing rules: fields `event:` and `data:` (several data lines join with
    a newline), an empty line ends an event, lines starting with ':' are comments.
    """
    name, data = b"", []
    for line in lines:
        if line == b"":
            if data or name:
                yield _make_event(name.decode("utf-8", "replace") or "message", b"\n".join(data), clock())
            name, data = b"", []
            continue
        if line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"event":
            name = value
        elif key == b"data":
            data.append(value)
    if data or name:
        yield _make_event(name.decode("utf-8", "replace") or "message", b"\n".join(data), clock())


def _make_event(name: str, raw: bytes, arrived: float) -> Event:
    event = Event(name=name, raw=raw, arrived=arrived)
    try:
        event.data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        event.decode_error = f"data is not valid UTF-8: {exc}"
    except json.JSONDecodeError as exc:
        event.decode_error = f"data is not JSON: {exc}"
    return event


def _arriving_chunks(response):
    """Bytes as they arrive (requests' iter_content would wait for a full chunk or EOF on a
    stream without chunked encoding, and a live stream would look buffered)."""
    while True:
        data = response.raw.read1(65536)
        if not data:
            return
        yield data


def _split_lines(chunks):
    """Turn a stream of byte chunks into lines, accepting \\r\\n, \\n and \\r endings."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find(b"\r\n"), buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0 or (buffer[cut:cut + 1] == b"\r" and cut == len(buffer) - 1):
                break
            size = 2 if buffer[cut:cut + 2] == b"\r\n" else 1
            yield buffer[:cut]
            buffer = buffer[cut + size:]
    if buffer:
        yield buffer


class WorkerClient:
    """Talks to one worker at `base_url`; every call is bounded by `timeout_s`."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def get(self, path: str, timeout_s: float | None = None) -> requests.Response:
        return self.session.get(self.url(path), timeout=timeout_s or self.timeout_s)

    def post_json(self, path: str, body, timeout_s: float | None = None) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=timeout_s or self.timeout_s)

    def health(self) -> requests.Response:
        return self.get("/health")

    def cancel(self, job_id) -> requests.Response:
        return self.post_json("/cancel", {"job_id": job_id})

    def execute(self, body=None, *, raw: bytes | None = None, wait: bool = True,
                deadline_s: float | None = None) -> Stream:
        """POST /execute; with `wait`, read the whole SSE stream before returning.

        `raw` sends bytes as they are (for malformed bodies). The stream is read on a
        fresh connection so that concurrent jobs do not share one. Reading stops at the
        first terminal event plus whatever follows before the server closes, or when
        `deadline_s` (default: timeout_s) has passed since sending.
        """
        payload = raw if raw is not None else json.dumps(body).encode("utf-8")
        sent = time.monotonic()
        response = requests.post(self.url("/execute"), data=payload, stream=True,
                                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                                 timeout=(self.timeout_s, self.timeout_s))
        stream = Stream(status=response.status_code, content_type=response.headers.get("Content-Type", ""),
                        sent=sent, _response=response)
        if not stream.content_type.startswith("text/event-stream"):
            try:
                stream.body = response.json()
            except ValueError:
                stream.body = response.text
            stream.closed = time.monotonic()
            response.close()
            return stream
        if wait:
            read_stream(stream, deadline_s or self.timeout_s)
        return stream


def read_stream(stream: Stream, within_s: float, until=None) -> Stream:
    """Read events into `stream` until it closes, `until(stream)` is true, or `within_s`
    seconds from now have passed (then `read_error` says so and the connection is closed).
    """
    response = stream._response
    if response is None or stream.closed is not None:
        return stream
    stop_at = time.monotonic() + within_s
    watchdog = threading.Timer(max(0.0, stop_at - time.monotonic()), response.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        if stream._reader is None:
            stream._reader = parse_events(_split_lines(_arriving_chunks(response)))
        for event in stream._reader:
            stream.events.append(event)
            if until is not None and until(stream):
                return stream
            if time.monotonic() > stop_at:
                stream.read_error = f"stream still open after {within_s:g} s"
                break
        stream.closed = time.monotonic()
    except (requests.RequestException, OSError, AttributeError, ValueError) as exc:
        # A connection closed by our own watchdog shows up as one of these.
        late = time.monotonic() >= stop_at - 0.01
        stream.read_error = (f"stream still open after {within_s:g} s" if late
                             else f"stream broken: {type(exc).__name__}: {exc}")
        stream.closed = time.monotonic()
    finally:
        watchdog.cancel()
    if stream.closed is not None:
        response.close()
    return stream
