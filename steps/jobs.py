"""Requests as the features write them, and the book of jobs a scenario started.

A feature writes a request as JSON without a job_id (a fresh one is added) and may use two
shorthands for long strings: "@chars(N)" (N letters) and "@digits(N)" (N digits, which most
BPE tokenizers turn into about one token each).
"""
from __future__ import annotations

import math
import re
import threading
import uuid
from dataclasses import dataclass, field

from steps.client import Stream, WorkerClient, read_stream

_SHORTHAND = re.compile(r"^@(chars|digits)\((\d+)\)$")

#: A request that keeps a worker generating until it is cancelled (2048 is the most M0 allows).
LONG_JOB = {"prompt": "Count from one to one hundred: one, two, three,", "max_tokens": 2048,
            "temperature": 0.8, "seed": 5}


def fresh_job_id() -> str:
    return f"m0-{uuid.uuid4()}"


def expand(value):
    """Replace the @chars(N) / @digits(N) shorthands, recursively."""
    if isinstance(value, str):
        match = _SHORTHAND.match(value)
        if match:
            count = int(match.group(2))
            alphabet = "abcdefghij" if match.group(1) == "chars" else "0123456789"
            return "".join(alphabet[(i * 7 + i // 10) % 10] for i in range(count))
        return value
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def build_request(template: dict) -> dict:
    """The request to send: the template expanded, with a fresh job_id unless it has one."""
    request = expand(dict(template))
    request.setdefault("job_id", fresh_job_id())
    return request


@dataclass
class Job:
    client: WorkerClient
    request: dict
    stream: Stream | None = None
    thread: threading.Thread | None = None
    #: Set once the worker answered the request with a status line (or the request failed).
    answered: threading.Event = field(default_factory=threading.Event)
    #: When the last POST /cancel for it was answered (time.monotonic, as event arrival times): the
    #: worker got the cancel before this.
    cancel_answered: float | None = None

    def ended_before_cancel(self) -> bool:
        """Whether its stream shows the job ended normally before its cancel was answered (see
        ended_before): the worker may have got the cancel at any moment up to the answer. Never true
        where no cancel was sent."""
        return self.cancel_answered is not None and self.ended_before(self.cancel_answered)

    def ended_before(self, moment: float) -> bool:
        """Whether its stream shows the job ended normally before `moment` (time.monotonic): the
        `end` event arrived before it, or reports a decode time shorter than the time from its first
        token (which came after decoding began) to `moment` (a CI run saw 448 tokens end in 136 ms and
        their events arrive in a burst, after the cancel went out and before its answer)."""
        stream = self.stream
        if stream is None or not stream.tokens or stream.terminal is None \
                or stream.terminal.name != "end" or not isinstance(stream.terminal.data, dict):
            return False
        if stream.terminal.arrived < moment:
            return True
        decode_ms = stream.terminal.data.get("decode_time_ms")
        return isinstance(decode_ms, (int, float)) and not isinstance(decode_ms, bool) \
            and decode_ms / 1000 < moment - stream.tokens[0].arrived

    def started_before(self, moment: float) -> bool:
        """Whether its `started` event (M0-W-1312: inference started) or a token arrived before
        `moment` (time.monotonic)."""
        return self.stream is not None and any(event.name in ("started", "token") and event.arrived < moment
                                               for event in self.stream.events)


@dataclass
class JobBook:
    """Every job a scenario started, so that teardown can cancel and close them all."""

    timeout_s: float
    jobs: list[Job] = field(default_factory=list)

    @property
    def last(self) -> Job:
        return self.jobs[-1]

    def execute(self, client: WorkerClient, template: dict, *, wait: bool = True) -> Stream:
        """Send a request; with `wait`, read its stream to the end (bounded by timeout_s)."""
        job = Job(client, build_request(template))
        self.jobs.append(job)
        job.stream = client.execute(job.request, wait=wait, deadline_s=self.timeout_s)
        return job.stream

    def execute_in_background(self, client: WorkerClient, template: dict) -> Job:
        """Send a request from another thread. It may wait in the worker's queue behind
        another job, so its stream gets twice the usual time."""
        job = Job(client, build_request(template))
        self.jobs.append(job)

        def run():
            try:
                stream = client.execute(job.request, wait=False)
            finally:
                job.answered.set()
            job.stream = read_stream(stream, 2 * self.timeout_s)

        job.thread = threading.Thread(target=run, daemon=True)
        job.thread.start()
        return job

    def start_running(self, client: WorkerClient, context_length=None) -> Job:
        """A long job whose first token has arrived: it is generating now. With a known
        context length, max_tokens leaves room for the prompt (an overflow is another test)."""
        max_tokens = LONG_JOB["max_tokens"]
        if isinstance(context_length, int) and context_length > 0:
            max_tokens = max(1, min(max_tokens, context_length - 64))
        stream = self.execute(client, {**LONG_JOB, "max_tokens": max_tokens}, wait=False)
        if stream.status == 200:
            read_stream(stream, self.timeout_s, until=lambda s: bool(s.tokens) or s.terminal is not None)
        return self.last

    def cleanup(self) -> None:
        for job in self.jobs:
            stream = job.stream
            if stream is None or (stream.status == 200 and stream.closed is None):
                try:
                    job.client.cancel(job.request.get("job_id"))
                except Exception:  # the worker may be gone; closing the stream is what matters
                    pass
            if stream is not None:
                stream.close()
        for job in self.jobs:
            if job.thread is not None:
                job.thread.join(timeout=self.timeout_s)


def wait_for(job: Job, timeout_s: float) -> Stream | None:
    """The stream of a background job once its thread is done (None if it is not)."""
    if job.thread is not None:
        job.thread.join(timeout=timeout_s)
    return job.stream


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]

