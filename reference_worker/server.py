"""The worker's HTTP API (spec §7): the Flask app factory, request validation, and serving.

Endpoints: POST /execute (SSE stream), GET /health, POST /cancel, POST /shutdown, GET /metrics.
Every refusal is JSON in the M0-W-1510 shape `{code, message, retriable}`, never a traceback.

Refusals of POST /execute: 400 INVALID_REQUEST with `field` naming the bad field (a body that
is not a JSON object or exceeds 1 MiB has no field); 409 INVALID_REQUEST (field job_id) while a
job of that id is queued or running; 503 SHUTTING_DOWN once a shutdown began; 503 QUEUE_FULL
when MAX_PENDING_JOBS already wait.

Stream details a client can rely on:
- A job that starts at once opens its stream with `event: started`. A job that must wait behind
  another gets an SSE comment line `: queued` after 0.1 s and one every 5 s while it waits, so
  the client sees the response headers at once; its `started` event comes when it runs.
- The stream ends after exactly one `end` or `error` event (M0-W-1311).

GET /health adds to the spec's fields `backend`, `active_job_id`, `queued_jobs`, and `reason`
while unhealthy: after a VRAM_OOM until a later job succeeds (M0-W-1021), for good after a
failed residency check (M0-W-1012), which also turns `resident` false and is narrated as a
critical error.
"""
from __future__ import annotations

import json
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import waitress
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from reference_worker import sse
from reference_worker.engine import SamplingParams
from reference_worker.errors import ErrorCode
from reference_worker.jobs import ExecuteRequest, JobQueue, JobRejected, JobResult
from reference_worker.metrics import WorkerMetrics
from reference_worker.narration import Narrator

# Request limits (M0-W-1300 and the later revision's sampling fields).
MAX_BODY_BYTES = 1 << 20
PROMPT_MAX_CHARS = 32768
MAX_TOKENS_LIMIT = 2048
SEED_MAX = 2**64 - 1
TEMPERATURE_MAX = 2.0
REPETITION_PENALTY_MAX = 2.0
STOP_MAX_SEQUENCES = 4
STOP_MAX_TOKENS = 32

MAX_PENDING_JOBS = 32
# Each open stream holds one server thread: room for every waiting job, the running one,
# and spare threads so /health, /cancel and /metrics never wait behind streams.
SERVER_THREADS = MAX_PENDING_JOBS + 8
_POLL_S = 0.1
_QUEUED_HEARTBEAT_S = 5.0


class InvalidRequest(Exception):
    """A request field that fails validation (M0-W-1302): HTTP 400 INVALID_REQUEST."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def body(self) -> dict:
        body = {"code": ErrorCode.INVALID_REQUEST.value, "message": self.message, "retriable": False}
        if self.field is not None:
            body["field"] = self.field
        return body


@dataclass(frozen=True)
class Limits:
    """What a request may ask: the operator's caps on max_tokens and on prompt tokens (when
    given), and the model's vocabulary size, which bounds top_k."""

    max_tokens_out: int = MAX_TOKENS_LIMIT
    max_tokens_in: int | None = None
    vocab_size: int = 2**31 - 1


# --- validation ---------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object; InvalidRequest for anything else (NaN included)."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest(None, f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(None, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(None, "request body must be a JSON object")
    return value


def _string(body: dict, name: str, max_chars: int | None = None) -> str:
    value = body.get(name)
    if name not in body:
        raise InvalidRequest(name, f"{name} is required")
    if not isinstance(value, str):
        raise InvalidRequest(name, f"{name} must be a string")
    return _text(name, value, max_chars)


def _text(name: str, value: str, max_chars: int | None) -> str:
    if not value:
        raise InvalidRequest(name, f"{name} must not be empty")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidRequest(name, f"{name} must be at most {max_chars} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(name, f"{name} contains an unpaired surrogate escape") from None
    return value


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    # JSON booleans are not numbers, and an integer is written without fraction or exponent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(name, f"{name} must be between {low} and {high}, got {value}")
    return value


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(name, f"{name} must be a number")
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidRequest(name, f"{name} must be in {interval}, got {value}")
    return float(value)


def _stop_sequences(body: dict, count_tokens: Callable[[str], int]) -> tuple[str, ...]:
    value = body.get("stop", [])
    if not isinstance(value, list) or len(value) > STOP_MAX_SEQUENCES:
        raise InvalidRequest("stop", f"stop must be a list of at most {STOP_MAX_SEQUENCES} strings")
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequest("stop", "stop must hold only strings")
        _text("stop", item, None)
        if count_tokens(item) > STOP_MAX_TOKENS:
            raise InvalidRequest("stop", f"each stop sequence must be at most {STOP_MAX_TOKENS} tokens")
    return tuple(value)


def parse_execute(body: bytes, limits: Limits, count_tokens: Callable[[str], int]) -> ExecuteRequest:
    """Validate a POST /execute body completely before any work is done (M0-W-1300/1302).

    Raises InvalidRequest naming the first bad field. Unknown fields are ignored. A missing
    seed is drawn at random here, so the `started` event can report it.
    """
    fields = parse_json_object(body)
    job_id = _string(fields, "job_id")
    prompt = _string(fields, "prompt", PROMPT_MAX_CHARS)
    max_tokens = _integer(fields, "max_tokens", limits.max_tokens_out, 1, limits.max_tokens_out)
    temperature = _number(fields, "temperature", 1.0, 0.0, TEMPERATURE_MAX)
    seed = _integer(fields, "seed", secrets.randbits(64), 0, SEED_MAX)
    top_p = _number(fields, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _integer(fields, "top_k", 0, 0, limits.vocab_size)
    min_p = _number(fields, "min_p", 0.0, 0.0, 1.0)
    repetition_penalty = _number(fields, "repetition_penalty", 1.0, 0.0, REPETITION_PENALTY_MAX, low_open=True)
    stop = _stop_sequences(fields, count_tokens)
    if limits.max_tokens_in is not None and count_tokens(prompt) > limits.max_tokens_in:
        raise InvalidRequest("prompt", f"prompt is longer than --max-tokens-in ({limits.max_tokens_in} tokens)")
    sampling = SamplingParams(temperature=temperature, seed=seed, top_k=top_k, top_p=top_p, min_p=min_p,
                              repetition_penalty=repetition_penalty, stop=stop)
    return ExecuteRequest(job_id, prompt, max_tokens, sampling)


# --- health -----------------------------------------------------------------------------

class HealthState:
    """What GET /health reports, kept up to date by job results, never computed on request
    (M0-W-1604: cached state, so a running job cannot delay it)."""

    def __init__(self, engine, narrator: Narrator):
        self._narrator = narrator
        self._lock = threading.Lock()
        self._static = {
            "model": engine.model_name, "quant_kind": engine.quant_kind,
            "tokenizer_kind": engine.tokenizer_kind, "vocab_size": engine.vocab_size,
            "context_length": engine.context_length, "sm": engine.sm,
            "cuda_runtime_version": engine.cuda_runtime_version, "backend": engine.backend,
        }
        self.vram_bytes_used = int(engine.vram_bytes_used)
        self.resident = bool(engine.resident)  # numpy: False from the start, and never checked
        self._problem: str | None = None  # why the worker is unhealthy
        self._residency_lost = False

    def job_finished(self, result: JobResult, vram_bytes_used: int) -> None:
        """M0-W-1021: a VRAM_OOM marks the worker unhealthy until a later job succeeds."""
        with self._lock:
            self.vram_bytes_used = vram_bytes_used
            if result.error is ErrorCode.VRAM_OOM:
                self._problem = f"VRAM_OOM in job {result.job_id}"
            elif result.error is None and not self._residency_lost:
                self._problem = None

    def residency_lost(self, cause: str) -> None:
        """M0-W-1012: weights left device memory (or could not be checked): log a critical
        error; /health says unhealthy and resident false from now on."""
        with self._lock:
            self._residency_lost = True
            self.resident = False
            self._problem = "VRAM residency check failed"
        self._narrator.emit("error", code=ErrorCode.CUDA_ERROR.value, level="critical",
                            message=f"VRAM residency check failed: {cause}")

    def body(self, uptime_seconds: float) -> dict:
        with self._lock:
            status = {"status": "healthy" if self._problem is None else "unhealthy",
                      "resident": self.resident, "vram_bytes_used": self.vram_bytes_used}
            if self._problem is not None:
                status["reason"] = self._problem
        return {**status, **self._static, "uptime_seconds": int(uptime_seconds)}


# --- the app ----------------------------------------------------------------------------

def create_app(engine, jobs: JobQueue, health: HealthState, metrics: WorkerMetrics, limits: Limits,
               request_shutdown: Callable[[], None]) -> Flask:
    """The Flask app of one worker. `request_shutdown` starts a graceful shutdown and returns
    at once; it must call `jobs.refuse_new()` first, so /execute answers 503 SHUTTING_DOWN."""
    app = Flask("reference_worker")

    def json_response(status: int, body: dict) -> Response:
        response = jsonify(body)
        response.status_code = status
        return response

    @app.post("/execute")
    def execute():
        try:
            jobs.check_accepting()  # a worker that is shutting down refuses even a bad request
            parsed = parse_execute(_read_body(), limits, lambda text: len(engine.tokenize(text)))
            job = jobs.submit(parsed)
        except InvalidRequest as exc:
            metrics.record_request("invalid_request")
            return json_response(400, exc.body())
        except JobRejected as exc:
            metrics.record_request(exc.body["code"].lower())
            return json_response(exc.status, exc.body)
        client_gone = request.environ.get("waitress.client_disconnected", lambda: False)
        return Response(_stream(jobs, job, client_gone), status=200, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/health")
    def health_endpoint():
        running, waiting = jobs.busy()
        return jsonify({**health.body(metrics.uptime_seconds()), "active_job_id": running, "queued_jobs": waiting})

    @app.post("/cancel")
    def cancel():
        try:
            fields = parse_json_object(_read_body())
            job_id = _string(fields, "job_id")
        except InvalidRequest as exc:
            return json_response(400, exc.body())
        jobs.stop(job_id)  # M0-W-1330: idempotent; unknown and finished ids are accepted
        return json_response(202, {"job_id": job_id, "status": "cancel accepted"})

    @app.post("/shutdown")
    def shutdown():
        request_shutdown()
        return json_response(202, {"status": "shutting down"})

    @app.get("/metrics")
    def metrics_endpoint():
        return Response(metrics.render(), mimetype=metrics.content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return json_response(exc.code or 500, {"code": ErrorCode.INVALID_REQUEST.value,
                                                "message": f"{exc.name}: {request.method} {request.path}",
                                                "retriable": False})

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        return json_response(500, {"code": ErrorCode.INTERNAL.value,
                                    "message": f"internal error ({type(exc).__name__})", "retriable": True})

    return app


def _read_body() -> bytes:
    """The raw body, refusing more than MAX_BODY_BYTES without reading it all."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise InvalidRequest(None, f"request body exceeds {MAX_BODY_BYTES} bytes")
    return request.stream.read(MAX_BODY_BYTES + 1)


def _stream(jobs: JobQueue, job, client_gone: Callable[[], bool]) -> Iterator[bytes]:
    """The SSE bytes of one job, each event yielded (and so sent) as soon as it exists.

    M0-W-1611: the client's connection is checked after every event and every 0.1 s while
    waiting; when it is gone, or the server closes this iterator, the job is stopped.
    """
    delivered_terminal = False
    next_heartbeat = time.monotonic() + _POLL_S
    try:
        while True:
            try:
                name, data = job.events.get(timeout=_POLL_S)
            except queue.Empty:
                if client_gone():
                    return
                if job.state == "queued" and time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + _QUEUED_HEARTBEAT_S
                    yield sse.format_comment("queued")
                continue
            yield sse.format_event(name, data)
            if name in sse.TERMINAL_EVENTS:
                delivered_terminal = True
                return
            if client_gone():
                return
    finally:
        if not delivered_terminal:
            jobs.stop_job(job, ErrorCode.CANCELLED, "client disconnected")


# --- serving ----------------------------------------------------------------------------

class WorkerServer:
    """Serves one app on waitress and shuts the whole worker down gracefully (M0-W-1340,
    M0-W-1630): on POST /shutdown, SIGTERM or SIGINT it stops accepting, cancels waiting jobs,
    lets the running one finish for `shutdown_grace_s` (then cancels it), frees the engine, and
    returns from `serve_forever`: within 5 s when the grace is at most 4 s."""

    def __init__(self, engine, narrator: Narrator, host: str, port: int, limits: Limits,
                 inference_timeout_s: float, residency_check_s: float, shutdown_grace_s: float):
        self._engine = engine
        self._narrator = narrator
        self._done = threading.Event()
        self._stopping = threading.Event()  # set when a shutdown begins: ends the residency checks
        self._shutdown_started = threading.Lock()
        self._residency_watch: threading.Thread | None = None
        self.metrics = WorkerMetrics(engine.quant_kind, int(engine.vram_bytes_used))
        self.health = HealthState(engine, narrator)
        self.jobs = JobQueue(engine, narrator, inference_timeout_s, MAX_PENDING_JOBS, self._job_finished)
        self.app = create_app(engine, self.jobs, self.health, self.metrics, limits, self.request_shutdown)
        # waitress flushes every write at once from the stream's own thread (its send_bytes is 1
        # since 3.0; TCP_NODELAY by default); a lookahead of one request keeps reading the socket
        # during a stream, so a disconnect is noticed. Measured on loopback (cuda/NOTES.md, "First
        # token over HTTP"), cheroot and gunicorn's gthread worker were no faster: ~0.5 ms from
        # request to first byte and ~0.1 ms from a yield to the client's read for all three.
        self._server = waitress.create_server(self.app, host=host, port=port, threads=SERVER_THREADS,
                                              channel_request_lookahead=1, ident="reference-worker")
        self._residency_check_s = residency_check_s
        self._shutdown_grace_s = shutdown_grace_s

    @property
    def port(self) -> int:
        return self._server.effective_port

    def start(self) -> None:
        """Answer HTTP requests on a background thread, and watch VRAM residency (M0-W-1012)
        when the model was resident at load: a numpy engine never was, so it is never checked
        (and never reported resident) rather than failing a check that cannot pass."""
        threading.Thread(target=self._server.run, name="http", daemon=True).start()
        if self._engine.resident:
            self._residency_watch = threading.Thread(target=self._watch_residency, name="residency", daemon=True)
            self._residency_watch.start()

    def serve_forever(self) -> None:
        """Serve until a shutdown completes. Call from the main thread (it installs handlers)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _: self.request_shutdown(signal.Signals(number).name))
        self.start()
        while not self._done.wait(_POLL_S):  # a timed wait lets the signal handlers run
            pass

    def request_shutdown(self, reason: str = "POST /shutdown") -> None:
        """Start the graceful shutdown once; later calls do nothing. Returns at once."""
        if self._shutdown_started.acquire(blocking=False):
            self._stopping.set()
            self.jobs.refuse_new()
            threading.Thread(target=self._shut_down, args=(reason,), name="shutdown", daemon=True).start()

    def wait_shut_down(self, timeout_s: float) -> bool:
        """Whether the shutdown completed within `timeout_s`."""
        return self._done.wait(timeout_s)

    def _shut_down(self, reason: str) -> None:
        self.jobs.close(self._shutdown_grace_s)
        time.sleep(2 * _POLL_S)  # let the streams deliver their terminal events
        if self._residency_watch is not None:
            self._residency_watch.join()  # a check must not see the engine's memory being freed
        self._engine.close()
        self._narrator.emit("shutdown", reason=reason)
        self._done.set()

    def _job_finished(self, result: JobResult) -> None:
        vram = int(self._engine.vram_bytes_used)
        self.health.job_finished(result, vram)
        self.metrics.record_request("success" if result.error is None else result.error.value.lower())
        self.metrics.record_inference(result.tokens_out, result.duration_ms, vram)

    def _watch_residency(self) -> None:
        """Every --residency-check-sec until shutdown, or until the first failed check."""
        while not self._stopping.wait(self._residency_check_s):
            try:
                resident = self._engine.check_residency()
                cause = "an allocation is not plain device memory"
            except Exception as exc:  # noqa: BLE001 - a check that cannot run has not shown residency
                resident, cause = False, f"the check failed: {type(exc).__name__}: {exc}"
            if not resident:
                self.health.residency_lost(cause)
                return

