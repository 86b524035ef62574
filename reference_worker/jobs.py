"""The job queue: one inference at a time, in arrival order (M0-W-1301).

A request that passed validation becomes a `Job`. One runner thread takes jobs from a FIFO
queue and drives `Engine.generate`; each job's SSE events go into the job's own event queue,
which the HTTP response reads. Cancels, client disconnects, timeouts and shutdown all stop a
job the same way: `JobQueue.stop(job_id, code, message)`; a running job's generation is
cancelled before its next token, a queued job ends at once. Either way the stream reads
`started → token* → error` with exactly one terminal event (M0-W-1311).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reference_worker.engine import SamplingParams
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.narration import Narrator, utc_timestamp


@dataclass(frozen=True)
class ExecuteRequest:
    """A validated POST /execute body; `sampling.seed` is always set (drawn when not given)."""

    job_id: str
    prompt: str
    max_tokens: int
    sampling: SamplingParams


@dataclass(frozen=True)
class JobResult:
    """How a job ended: `error` is None for an `end` event."""

    job_id: str
    error: ErrorCode | None
    tokens_out: int
    duration_ms: float


class JobRejected(Exception):
    """The queue refused a job: HTTP `status` and a JSON body in the error shape of M0-W-1510."""

    def __init__(self, status: int, code: str, message: str, retriable: bool, **fields):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "retriable": retriable, **fields}


class Job:
    """One execute request's life (queued → running → finished) and its event stream.

    The queue owns the job: it alone changes `state`, under `lock`, and feeds `events`.
    """

    def __init__(self, request: ExecuteRequest):
        self.request = request
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.state = "queued"
        self.stop_error: WorkerError | None = None
        self.generation = None
        self.lock = threading.Lock()

    @property
    def job_id(self) -> str:
        return self.request.job_id


class JobQueue:
    """Runs jobs one at a time on a single runner thread, in the order they were submitted."""

    def __init__(self, engine, narrator: Narrator, inference_timeout_s: float, max_pending: int,
                 on_finished: Callable[[JobResult], None]):
        self._engine = engine
        self._narrator = narrator
        self._timeout_s = inference_timeout_s
        self._max_pending = max_pending
        self._on_finished = on_finished
        self._jobs: dict[str, Job] = {}  # queued and running jobs by id
        self._fifo: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._accepting = True
        self._runner = threading.Thread(target=self._run, name="job-runner", daemon=True)
        self._runner.start()

    # --- called from request threads -------------------------------------------------

    def refuse_new(self) -> None:
        """From now on, submit() refuses every job with 503 SHUTTING_DOWN (M0-W-1340)."""
        with self._lock:
            self._accepting = False

    def check_accepting(self) -> None:
        """Raise JobRejected 503 SHUTTING_DOWN once refuse_new() has been called."""
        if not self._accepting:
            raise JobRejected(503, "SHUTTING_DOWN", "worker is shutting down", retriable=True)

    def submit(self, request: ExecuteRequest) -> Job:
        """Queue a job; raises JobRejected: 409 when its id is queued or running, 503 when
        the worker is shutting down or `max_pending` jobs already wait."""
        with self._lock:
            self.check_accepting()
            if request.job_id in self._jobs:
                raise JobRejected(409, ErrorCode.INVALID_REQUEST.value,
                                  f"job_id {request.job_id!r} is already queued or running",
                                  retriable=False, field="job_id")
            if sum(job.state == "queued" for job in self._jobs.values()) >= self._max_pending:
                raise JobRejected(503, "QUEUE_FULL", f"{self._max_pending} jobs are already waiting",
                                  retriable=True)
            job = Job(request)
            self._jobs[job.job_id] = job
            self._fifo.put(job)
        self._narrator.emit("execute_start", job.job_id, max_tokens=request.max_tokens,
                            seed=request.sampling.seed)
        return job

    def stop(self, job_id: str, code: ErrorCode = ErrorCode.CANCELLED, message: str = "job cancelled") -> None:
        """Stop a queued or running job with `code`; unknown or finished ids are ignored."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            self.stop_job(job, code, message)

    def stop_job(self, job: Job, code: ErrorCode, message: str) -> None:
        """Stop this very job (not whichever job holds its id now) if it has not finished."""
        self._stop(job, WorkerError(code, message))

    def busy(self) -> tuple[str | None, int]:
        """The running job's id (or None) and how many jobs wait behind it."""
        with self._lock:
            running = next((j.job_id for j in self._jobs.values() if j.state == "running"), None)
            waiting = sum(j.state == "queued" for j in self._jobs.values())
        return running, waiting

    def close(self, grace_s: float) -> None:
        """Refuse new jobs, cancel waiting ones, let the running one finish for up to `grace_s`
        seconds, then cancel it too and stop the runner thread."""
        self.refuse_new()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.state == "queued":
                self._stop(job, WorkerError(ErrorCode.CANCELLED, "worker is shutting down"))
        if not self._wait_idle(grace_s):
            for job in jobs:
                self._stop(job, WorkerError(ErrorCode.CANCELLED, "worker is shutting down"))
            self._wait_idle(1.0)
        self._fifo.put(None)
        self._runner.join(timeout=1.0)

    def _wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._jobs, timeout=timeout_s)

    def _stop(self, job: Job, error: WorkerError) -> None:
        with job.lock:
            if job.state == "finished" or job.stop_error is not None:
                return  # the first reason to stop wins; stopping is idempotent
            job.stop_error = error
            never_ran = job.state == "queued"
            if never_ran:
                job.state = "finished"
                # M0-W-1311: a job that never ran still streams started → error.
                job.events.put(("started", self._started_payload(job)))
            elif job.generation is not None:
                job.generation.cancel()
        if never_ran:
            self._finish(job, error, tokens_out=0, duration_ms=0.0)

    # --- the runner thread ------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._fifo.get()) is not None:
            with job.lock:
                if job.state != "queued":
                    continue  # stopped while it waited
                job.state = "running"
                job.events.put(("started", self._started_payload(job)))
            self._execute(job)

    def _execute(self, job: Job) -> None:
        request = job.request
        timeout = WorkerError(ErrorCode.INFERENCE_TIMEOUT, f"inference exceeded {self._timeout_s:g} s")
        started = time.monotonic()
        # The timeout is checked after each token, where a cancel takes effect anyway; a Timer
        # thread per job cost its start-up hand-off before every first token (hop_bench.py).
        deadline = started + self._timeout_s
        tokens_out = 0
        stop_reason = None
        generation = None
        error: WorkerError | None = None
        try:
            generation = self._engine.generate(request.prompt, request.max_tokens, request.sampling)
            with job.lock:
                job.generation = generation
                if job.stop_error is not None:
                    generation.cancel()
            for step in generation:
                job.events.put(("token", {"t": step.text, "i": step.index, "token_id": step.token_id}))
                tokens_out += 1
                if time.monotonic() >= deadline:
                    self._stop(job, timeout)
            stop_reason = generation.stop_reason
            if stop_reason == "cancelled":
                error = job.stop_error or WorkerError(ErrorCode.CANCELLED, "job cancelled")
        except WorkerError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - an engine failure ends this job, not the worker
            self._narrator.emit("error", job.job_id, code=ErrorCode.INTERNAL.value,
                                message=f"{type(exc).__name__}: {exc}")
            error = WorkerError(ErrorCode.INTERNAL, f"internal error during generation ({type(exc).__name__})")
        finally:
            if generation is not None:
                generation.close()
        with job.lock:
            job.state = "finished"
            job.generation = None
        self._finish(job, error, tokens_out, (time.monotonic() - started) * 1000.0, stop_reason)

    def _started_payload(self, job: Job) -> dict:
        return {"job_id": job.job_id, "model": self._engine.model_name,
                "started_at": utc_timestamp(), "seed": job.request.sampling.seed}

    def _finish(self, job: Job, error: WorkerError | None, tokens_out: int, duration_ms: float,
                stop_reason: str | None = None) -> None:
        # Health, metrics and the job registry are updated before the terminal event goes out,
        # so a client that has read it sees them current (and may reuse the job_id at once).
        # M0-W-1901 (deferred to M1, reported by the harness as informational): execute_end
        # carries the end event's counts, also for a job that ended with an error.
        counts = {"tokens_out": tokens_out, "decode_time_ms": round(duration_ms)}
        if error is None:
            terminal = ("end", {**counts, "stop_reason": stop_reason})
            self._narrator.emit("execute_end", job.job_id, outcome="success", stop_reason=stop_reason, **counts)
        else:
            terminal = ("error", {"code": error.code.value, "message": error.message, "retriable": error.retriable})
            if error.code not in (ErrorCode.CANCELLED, ErrorCode.INTERNAL):  # INTERNAL is narrated with its cause
                self._narrator.emit("error", job.job_id, code=error.code.value, message=error.message)
            self._narrator.emit("execute_end", job.job_id, outcome=error.code.value.lower(), **counts)
        self._on_finished(JobResult(job.job_id, None if error is None else error.code, tokens_out, duration_ms))
        with self._idle:
            self._jobs.pop(job.job_id, None)
            self._idle.notify_all()
        job.events.put(terminal)
