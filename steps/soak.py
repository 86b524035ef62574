"""The soak of the robustness profile: many jobs from concurrent clients, some cancelled, some
dropped by their client mid-stream, each stream read with a plain SSE client (sseclient-py:
here the events matter, not their bytes or arrival times).

Every wait is bounded: a stream is closed by a watchdog at its deadline, and once the time
budget is spent or enough streams have hung, no new job starts.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import sseclient
import urllib3

PROMPTS = ("Hello", "Write a haiku about GPU computing", "Count: one, two, three,", "The capital of France is",
           "def fibonacci(n):", "Translate 'good morning' into French:")
#: Fates of a soak job: read to the end, cancelled after some tokens, or dropped by its client.
FATES = ("keep", "keep", "cancel", "drop")
#: Streams that may hang before the soak stops starting jobs (a worker that stalls would
#: otherwise cost every remaining job's full deadline).
MAX_HUNG = 4


@dataclass
class SoakJob:
    index: int
    fate: str
    after_tokens: int  # cancel or drop after this many tokens
    request: dict
    status: int | None = None
    refusal: object = None
    events: list[tuple[str, object]] = field(default_factory=list)
    cancel_status: int | None = None
    error: str | None = None  # the connection failed, or the stream hit its deadline
    skipped: bool = False  # not started: the budget was spent or too many streams hung

    @property
    def kept(self) -> bool:
        """A stream the client read to its end (kept or cancelled), not one it dropped."""
        return self.status == 200 and self.fate != "drop"

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @property
    def tokens(self) -> int:
        return self.names.count("token")


def plan(seed: int, count: int) -> list[SoakJob]:
    """The soak's jobs, the same for the same seed."""
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        request = {"job_id": f"soak-{seed}-{i}-{rng.getrandbits(32):08x}", "prompt": rng.choice(PROMPTS),
                   "max_tokens": rng.randrange(1, 24), "temperature": rng.choice((0, 0.7, 1.0)), "seed": i}
        jobs.append(SoakJob(i, rng.choice(FATES), rng.randrange(0, 4), request))
    return jobs


def order_problem(names: list[str]) -> str | None:
    """What is wrong with a finished stream's event order (M0-W-1311: started, token*, then
    exactly one terminal event, last), or None."""
    if not names:
        return "no events at all"
    if names[0] != "started":
        return f"first event is {names[0]!r}, not started"
    body = [n for n in names[1:] if n != "metrics"]
    terminals = [i for i, n in enumerate(body) if n in ("end", "error")]
    if len(terminals) != 1:
        return f"{len(terminals)} terminal events"
    if terminals[0] != len(body) - 1:
        return "events after the terminal event"
    if any(n != "token" for n in body[:-1]):
        return "events other than tokens between started and the terminal event"
    return None


def _chunks(response):
    """Bytes as they arrive (iter_content would wait for a full chunk)."""
    return iter(lambda: response.raw.read1(65536), b"")


class Soak:
    def __init__(self, base_url: str, *, clients: int, deadline_s: float, budget_s: float):
        self.base_url = base_url.rstrip("/")
        self.clients = clients
        self.deadline_s = deadline_s
        self.stop_at = time.monotonic() + budget_s
        self.hung = 0
        self.lock = threading.Lock()

    def run(self, jobs: list[SoakJob]) -> list[SoakJob]:
        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            list(pool.map(self._one, jobs))
        return jobs

    def _one(self, job: SoakJob) -> None:
        if time.monotonic() >= self.stop_at or self.hung >= MAX_HUNG:
            job.skipped = True
            return
        try:
            response = requests.post(f"{self.base_url}/execute", json=job.request, stream=True,
                                     timeout=(self.deadline_s, self.deadline_s))
        except requests.RequestException as exc:
            job.error = f"POST /execute failed: {type(exc).__name__}: {exc}"
            return
        job.status = response.status_code
        if job.status != 200:
            try:
                job.refusal = response.json()
            except ValueError:
                job.refusal = response.text[:200]
            response.close()
            return
        fired = threading.Event()

        def close_at_deadline():
            fired.set()
            response.close()

        watchdog = threading.Timer(self.deadline_s, close_at_deadline)
        watchdog.start()
        timed_out = False
        try:
            self._read(job, response)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
            # A stream closed by the watchdog (or by the worker mid-event) shows up as one of these.
            timed_out = isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
            job.error = f"stream broken after {job.names[-3:]}: {type(exc).__name__}: {exc}"
        finally:
            watchdog.cancel()
            response.close()
        if (fired.is_set() or timed_out) and job.fate != "drop":
            job.error = f"stream still open after {self.deadline_s:g} s; events so far: {job.names[-3:]}"
            with self.lock:
                self.hung += 1

    def _read(self, job: SoakJob, response) -> None:
        for event in sseclient.SSEClient(_chunks(response)).events():
            try:
                data = json.loads(event.data)
            except ValueError:
                data = event.data
            job.events.append((event.event, data))
            reached = (event.event == "started" and job.after_tokens == 0
                       or event.event == "token" and job.tokens == job.after_tokens)
            if reached and job.fate == "drop":
                return  # the client goes away mid-stream; the caller closes the connection
            if reached and job.fate == "cancel" and job.cancel_status is None:
                job.cancel_status = requests.post(f"{self.base_url}/cancel", json={"job_id": job.request["job_id"]},
                                                  timeout=self.deadline_s).status_code


def findings(jobs: list[SoakJob]) -> list[str]:
    """What the soak saw wrong: hung or broken streams, bad event orders, cancels not answered
    202 or not ended with CANCELLED (unless the job ended first), 5xx other than a 503 refusal."""
    seen = []
    for job in jobs:
        label = f"job {job.index} ({job.fate} after {job.after_tokens} tokens, max_tokens {job.request['max_tokens']})"
        if job.skipped:
            continue
        if job.error:
            seen.append(f"{label}: {job.error}")
            continue
        if job.status != 200:
            if job.status >= 500 and not (job.status == 503 and isinstance(job.refusal, dict)):
                seen.append(f"{label}: HTTP {job.status} {job.refusal!r}")
            continue
        if not job.kept:
            continue
        problem = order_problem(job.names)
        if problem:
            seen.append(f"{label}: {problem}: {job.names[-5:]}")
            continue
        if job.fate == "cancel" and job.cancel_status is not None:
            name, data = job.events[-1]
            if job.cancel_status != 202:
                seen.append(f"{label}: POST /cancel answered {job.cancel_status}, not 202")
            elif name == "error" and not (isinstance(data, dict) and data.get("code") == "CANCELLED"):
                seen.append(f"{label}: cancelled, but its error event is {data!r}")
    return seen
