"""Narration-core log events (M0-W-1900) and the human progress line.

Machines read stdout: one JSON object per line, each carrying the required context
(worker_id, job_id, model_ref, gpu_device, event). People read stderr: one short line per
event, e.g. `[worker 1b4e...] loading model 50%`. An `error` event may carry `level: "critical"`
(a failed VRAM residency check, M0-W-1012); its human line then says CRITICAL instead of ERROR.
"""
from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import TextIO

EVENTS = (
    "startup",
    "model_load_start",
    "model_load_progress",
    "model_load_complete",
    "ready",
    "execute_start",
    "execute_end",
    "error",
    "shutdown",
)


def utc_timestamp() -> str:
    """The current time as ISO-8601 UTC with millisecond precision and a `Z` suffix."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Narrator:
    """Writes narration events for one worker; safe to call from any thread."""

    def __init__(self, worker_id: str, model_ref: str, gpu_device: int,
                 machine: TextIO | None = None, human: TextIO | None = None):
        self._context = {"worker_id": worker_id, "model_ref": model_ref, "gpu_device": gpu_device}
        self._machine = machine or sys.stdout
        self._human = human or sys.stderr
        self._lock = threading.Lock()

    def emit(self, event: str, job_id: str | None = None, /, **fields) -> None:
        """Write `event` with `fields`, `job_id` (null outside a job) and the worker's context;
        the event, job_id and context win over `fields` of the same name."""
        if event not in EVENTS:
            raise ValueError(f"not a narration event: {event!r}")
        record = {"ts": utc_timestamp(), "event": event, **self._context, "job_id": job_id}
        record.update((name, value) for name, value in fields.items() if name not in record)
        line = json.dumps(record, separators=(",", ":"))  # ASCII: safe on any stdout encoding
        with self._lock:
            self._machine.write(line + "\n")
            self._machine.flush()
            self._human.write(self._human_line(record) + "\n")
            self._human.flush()

    def _human_line(self, record: dict) -> str:
        worker = str(record["worker_id"])[:8]
        event = record["event"]
        job = f" job {record['job_id']}" if record["job_id"] is not None else ""
        if event == "model_load_progress":
            return f"[worker {worker}] loading model {record['percent']}%"
        details = " ".join(f"{k}={v}" for k, v in record.items()
                           if k not in ("ts", "event", "job_id", "level", "code", "message", *self._context))
        suffix = f" ({details})" if details else ""
        if event == "error":
            level = str(record.get("level", "error")).upper()
            return f"[worker {worker}]{job} {level} {record.get('code')}: {record.get('message')}{suffix}"
        return f"[worker {worker}]{job} {event.replace('_', ' ')}{suffix}"
