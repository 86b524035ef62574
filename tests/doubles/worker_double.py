"""A test double of an M0 worker: the HTTP API, CLI and narration of the spec over a fake
model, with switches that break one rule each, to check that the harness notices.

    python tests/doubles/worker_double.py --worker-id UUID --model PATH --gpu-device 0 \
        --port PORT [--token-delay S] [--break RULE]

The "model" is a GGUF file read for its metadata only; tokens are pieces of text drawn from
a fixed list by a seeded RNG, so outputs are reproducible the way the spec asks. Standard
library only (plus gguf to read the file), so it starts in a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Each rule a double can break, and what it then does wrong.
RULES = {
    "event-order": "sends the started event after the first token",
    "health-missing-field": "leaves quant_kind out of /health",
    "health-mistyped-field": "reports vocab_size as a string",
    "not-resident": "claims a backend of its own ('host') and reports resident false, with VRAM in use",
    "no-vram": "claims a backend of its own ('host') and reports resident true with vram_bytes_used 0",
    "quant-kind-lowercase": "reports quant_kind as 'q4_k_m' instead of the spec's 'Q4_K_M'",
    "accept-bad-job-id": "accepts an empty or non-string job_id",
    "accept-bad-prompt": "accepts an empty, non-string or over-long prompt",
    "accept-bad-max-tokens": "accepts max_tokens outside 1..2048 or not an integer",
    "accept-bad-temperature": "accepts temperature outside 0..2 or not a number",
    "accept-bad-seed": "accepts a seed that is not a uint64",
    "accept-bad-body": "treats a body that is not a JSON object as an empty request of defaults",
    "accept-duplicate-job-id": "runs a second job with the job_id of a running one",
    "drop-on-deep-json": "lets a body nested too deep for its JSON parser kill the request: no answer",
    "leak-on-disconnect": "never frees the job of a client that went away: later jobs wait forever",
    "cancel-ignored": "answers 202 to /cancel but keeps generating",
    "cancel-wrong-answer": "answers 200 to /cancel and ends the job with `end`",
    "utf8-split": "splits multibyte characters across token events",
    "nondeterministic": "ignores the seed and temperature 0: every output is random",
    "ignore-seed": "draws the same tokens for every seed",
    "overrun-max-tokens": "streams one token more than max_tokens",
    "wrong-indices": "numbers tokens from 1",
    "wrong-count": "reports one token more in tokens_out than it streamed",
    "overflow-crash": "exits when a job overflows the context",
    "overflow-wrong-code": "reports a context overflow as INTERNAL",
    "concurrent": "runs jobs at the same time",
    "bad-exit-codes": "exits 0 on invalid arguments and 1 on SIGTERM",
    "no-progress": "narrates no model_load_progress events",
    "ignore-sigterm": "ignores SIGTERM",
    "buffered": "sends all of a job's events at once when it ends",
}

PIECES = ["GPU", " cores", " hum", " softly", ",", " silicon", " dreams", "\n", " 你好", " 世界", " 👋",
          " 日本語", " light", " flows", " through", " 🌍", " threads", " é", " café", " ñ"]
ERROR_RETRIABLE = {"VRAM_OOM": True, "INTERNAL": True, "CANCELLED": False, "INVALID_REQUEST": False}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--gpu-device", required=True)
    parser.add_argument("--port", required=True)
    for optional in ("--max-tokens-in", "--max-tokens-out", "--inference-timeout-sec", "--kv-cache-size-mb"):
        parser.add_argument(optional, type=int)  # M0-W-1101: accepted, not used by the double
    parser.add_argument("--token-delay", type=float, default=0.002)
    parser.add_argument("--break", dest="broken", action="append", default=[], choices=sorted(RULES))
    return parser.parse_args(argv)


class Worker:
    def __init__(self, args, metadata):
        self.args = args
        self.broken = set(args.broken)
        self.metadata = metadata
        self.started = time.monotonic()
        self.run_lock = threading.Lock()
        self.jobs_lock = threading.Lock()
        self.active: dict[str, threading.Event] = {}
        self.cancelled: set[str] = set()
        self.shutting_down = False
        self.tokens_total = 0
        self.stop = lambda: None  # set once the server runs

    def metrics(self) -> dict:
        return {"worker_vram_bytes": 0, "worker_requests_total": 0,
                "worker_tokens_generated_total": self.tokens_total, "worker_inference_duration_ms": 0,
                "worker_uptime_seconds": time.monotonic() - self.started}

    def narrate(self, event, **fields):
        record = {"worker_id": self.args.worker_id, "model_ref": self.args.model,
                  "gpu_device": int(self.args.gpu_device), "event": event, **fields}
        print(json.dumps(record), flush=True)

    def health(self) -> dict:
        """What the reference worker on NumPy reports: a model in host memory, in M0's matrix."""
        body = {"status": "healthy", "model": self.metadata["name"], "resident": False, "backend": "numpy",
                "quant_kind": "Q4_K_M", "vram_bytes_used": 0, "tokenizer_kind": "gguf-bpe",
                "vocab_size": len(PIECES), "context_length": self.metadata["context_length"],
                "uptime_seconds": time.monotonic() - self.started}
        if "not-resident" in self.broken:
            body.update(backend="host", vram_bytes_used=self.metadata["size"])
        if "no-vram" in self.broken:
            body.update(backend="host", resident=True)
        if "quant-kind-lowercase" in self.broken:
            body["quant_kind"] = "q4_k_m"
        if "health-missing-field" in self.broken:
            del body["quant_kind"]
        if "health-mistyped-field" in self.broken:
            body["vocab_size"] = str(body["vocab_size"])
        return body

    # --- validation (M0-W-1300) -----------------------------------------------------------
    def validate(self, body) -> str | None:
        """The problem with a request, or None when it is valid."""
        b = self.broken
        if not isinstance(body, dict):
            return None if "accept-bad-body" in b else "body must be a JSON object"
        checks = [
            ("job_id", "accept-bad-job-id", lambda v: _is_text(v) and v != "", True),
            ("prompt", "accept-bad-prompt", lambda v: _is_text(v) and 0 < len(v) <= 32768, True),
            ("max_tokens", "accept-bad-max-tokens", lambda v: _is_int(v) and 1 <= v <= 2048, False),
            ("temperature", "accept-bad-temperature", lambda v: _is_num(v) and 0 <= v <= 2, False),
            ("seed", "accept-bad-seed", lambda v: _is_int(v) and 0 <= v < 2**64, False),
            ("top_p", None, lambda v: _is_num(v) and 0 <= v <= 1, False),
            ("top_k", None, lambda v: _is_int(v) and 0 <= v <= len(PIECES), False),
            ("repetition_penalty", None, lambda v: _is_num(v) and 0 <= v <= 2, False),
            ("stop", None, lambda v: isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) for s in v),
             False),
        ]
        for name, rule, ok, required in checks:
            if rule in b:
                continue
            if name not in body:
                if required:
                    return f"{name} is required"
                continue
            if not ok(body[name]):
                return f"{name} is out of range or of the wrong type"
        return None

    # --- generation ---------------------------------------------------------------------
    def pieces(self, body, seed):
        """The token texts a job produces, in order (a generator)."""
        prompt = str(body.get("prompt", ""))
        temperature = body.get("temperature", 1.0) if _is_num(body.get("temperature", 1.0)) else 1.0
        greedy = (temperature == 0 or body.get("top_k") == 1
                  or (_is_num(body.get("top_p")) and body["top_p"] < 1e-6))
        if "nondeterministic" in self.broken:
            rng = random.Random()
        elif greedy:
            rng = random.Random(f"greedy|{prompt}")
        elif "ignore-seed" in self.broken:
            rng = random.Random(f"sampled|{prompt}")
        else:
            rng = random.Random(f"sampled|{prompt}|{seed}|{temperature}")
        while True:
            yield rng.choice(PIECES)


def _is_text(v) -> bool:
    """A string that is Unicode text (JSON's \\ud800 escapes decode to lone surrogates, which are not)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def make_handler(worker: Worker):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Without this, a small answer written in two parts waits on delayed ACKs.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def send_json(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def read_body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length)

        def do_GET(self):
            if self.path == "/health":
                self.send_json(200, worker.health())
            elif self.path == "/metrics":
                text = "".join(f"# TYPE {name} gauge\n{name} {value}\n" for name, value in worker.metrics().items())
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_json(404, {"code": "INVALID_REQUEST", "message": "no such endpoint", "retriable": False})

        def do_POST(self):
            raw = self.read_body()
            if self.path == "/cancel":
                self.cancel(raw)
            elif self.path == "/shutdown":
                worker.shutting_down = True
                self.send_json(202, {"status": "shutting down"})
                threading.Thread(target=worker.stop, daemon=True).start()
            elif worker.shutting_down:
                self.send_json(503, {"code": "INTERNAL", "message": "shutting down", "retriable": True})
            elif self.path == "/execute":
                self.execute(raw)
            else:
                self.send_json(404, {"code": "INVALID_REQUEST", "message": "no such endpoint", "retriable": False})

        def cancel(self, raw):
            try:
                job_id = json.loads(raw).get("job_id")
            except (ValueError, AttributeError, RecursionError):
                job_id = None
            if not isinstance(job_id, str) or not job_id:
                return self.refuse("job_id must be a non-empty string")
            if "cancel-ignored" not in worker.broken:
                with worker.jobs_lock:
                    worker.cancelled.add(job_id)
            self.send_json(200 if "cancel-wrong-answer" in worker.broken else 202, {"job_id": job_id})

        def refuse(self, message):
            self.send_json(400, {"code": "INVALID_REQUEST", "message": message, "retriable": False})

        def execute(self, raw):
            try:
                body = json.loads(raw.decode("utf-8"))
            except ValueError:
                body = "not json"
            except RecursionError:
                if "drop-on-deep-json" in worker.broken:
                    raise
                body = "not json"
            problem = worker.validate(body)
            if problem:
                return self.refuse(problem)
            if not isinstance(body, dict):
                body = {}
            job_id = str(body.get("job_id") or uuid.uuid4())
            with worker.jobs_lock:
                if job_id in worker.active and "accept-duplicate-job-id" not in worker.broken:
                    return self.refuse(f"job {job_id} is already running")
                worker.active[job_id] = threading.Event()
                worker.cancelled.discard(job_id)
            try:
                self.stream(job_id, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away: the job stops with it
            finally:
                with worker.jobs_lock:
                    worker.active.pop(job_id, None)

        def stream(self, job_id, body):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            buffered = "buffered" in worker.broken
            out = []

            def send(name, data):
                out.append(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                if not buffered:
                    self.wfile.write(out.pop())
                    self.wfile.flush()

            holding = False
            while "concurrent" not in worker.broken and job_id not in worker.cancelled:
                holding = worker.run_lock.acquire(timeout=0.01)
                if holding:
                    break
            try:
                self.generate(job_id, body, send)
            except (BrokenPipeError, ConnectionResetError):
                if "leak-on-disconnect" in worker.broken:
                    holding = False  # the slot stays taken
                raise
            finally:
                if holding:
                    worker.run_lock.release()
            if buffered:
                self.wfile.write(b"".join(out))
                self.wfile.flush()

        def generate(self, job_id, body, send):
            seed = body.get("seed")
            seed = seed if _is_int(seed) else random.getrandbits(64)
            started = {"job_id": job_id, "model": worker.metadata["name"], "seed": seed,
                       "started_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
            late_start = "event-order" in worker.broken
            if not late_start:
                send("started", started)
            worker.narrate("execute_start", job_id=job_id)
            max_tokens = body.get("max_tokens", 2048) if _is_int(body.get("max_tokens")) else 2048
            prompt = str(body.get("prompt", ""))
            if len(prompt) + max_tokens > worker.metadata["context_length"]:
                if late_start:
                    send("started", started)
                if "overflow-crash" in worker.broken:
                    os._exit(3)
                code = "INTERNAL" if "overflow-wrong-code" in worker.broken else "VRAM_OOM"
                send("error", {"code": code, "message": "context overflow", "retriable": ERROR_RETRIABLE[code]})
                worker.narrate("error", job_id=job_id)
                return
            limit = max_tokens + (1 if "overrun-max-tokens" in worker.broken else 0)
            first_index = 1 if "wrong-indices" in worker.broken else 0
            stops = body.get("stop") or []
            text, carry, count, start = "", "", 0, time.monotonic()
            pieces = worker.pieces(body, seed)
            for _ in range(limit):
                if job_id in worker.cancelled:
                    if "cancel-wrong-answer" in worker.broken:
                        break
                    if late_start and count == 0:
                        send("started", started)
                    send("error", {"code": "CANCELLED", "message": "job cancelled", "retriable": False})
                    return
                time.sleep(worker.args.token_delay)
                piece = next(pieces)
                sent_text = piece
                if "utf8-split" in worker.broken:
                    sent_text, carry = split_utf8(carry + piece)
                send("token", {"t": sent_text, "i": count + first_index})
                count += 1
                worker.tokens_total += 1
                if late_start and count == 1:
                    send("started", started)
                text += piece
                if any(s and text.endswith(s) for s in stops):
                    break
            decode_ms = int((time.monotonic() - start) * 1000)
            tokens_out = count + (1 if "wrong-count" in worker.broken else 0)
            send("end", {"tokens_out": tokens_out, "decode_time_ms": decode_ms})
            worker.narrate("execute_end", job_id=job_id, tokens_out=count, decode_time_ms=decode_ms)

    return Handler


def split_utf8(text: str) -> tuple[str, str]:
    """`text` cut after the first byte of its first multibyte character: what a worker that
    sends raw token bytes would send now, and what it would carry into the next event."""
    data = text.encode("utf-8", "surrogateescape")
    cut = next((i + 1 for i, byte in enumerate(data) if byte >= 0xC0), None)
    if cut is None:
        return text, ""
    return data[:cut].decode("utf-8", "surrogateescape"), data[cut:].decode("utf-8", "surrogateescape")


def load_metadata(path) -> dict:
    """Read the GGUF's name and context length; unsupported or unreadable files fail."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()
    architecture = field("general.architecture")
    if architecture not in ("llama", "qwen2", "phi3", "gpt2"):
        raise ValueError(f"unsupported architecture {architecture!r}")
    for tensor in reader.tensors:
        _ = tensor.data[:1]
    return {"name": field("general.name") or os.path.basename(path), "size": os.path.getsize(path),
            "context_length": int(field(f"{architecture}.context_length") or 2048)}


def fail(message: str, broken: set[str]) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(0 if "bad-exit-codes" in broken else 1)


def main(argv=None) -> None:
    broken = set()
    if argv is None:
        argv = sys.argv[1:]
    if "--break" in argv:
        broken = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--break"}
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        sys.exit(0 if "bad-exit-codes" in broken else exc.code)
    try:
        uuid.UUID(args.worker_id)
    except ValueError:
        fail(f"--worker-id must be a UUID, got {args.worker_id!r}", broken)
    if not os.path.isfile(args.model):
        fail(f"--model {args.model}: no such file", broken)
    if not args.gpu_device.isdigit():
        fail(f"--gpu-device must be a device number, got {args.gpu_device!r}", broken)
    if not args.port.isdigit() or not 1024 <= int(args.port) <= 65535:
        fail(f"--port must be 1024..65535, got {args.port!r}", broken)
    worker = Worker(args, {"name": "?", "context_length": 0, "size": 0})
    worker.narrate("startup")
    worker.narrate("model_load_start")
    try:
        worker.metadata = load_metadata(args.model)
    except Exception as exc:  # anything unreadable is a failed load
        worker.narrate("error", code="MODEL_LOAD_FAILED", message=str(exc))
        fail(f"MODEL_LOAD_FAILED: {exc} (model {args.model}, gpu_device {args.gpu_device})", broken)
    if "no-progress" not in worker.broken:
        for percent in (0, 25, 50, 75, 100):
            worker.narrate("model_load_progress", percent=percent)
    worker.narrate("model_load_complete")
    try:
        server = ThreadingHTTPServer(("127.0.0.1", int(args.port)), make_handler(worker))
    except OSError as exc:
        fail(f"cannot listen on port {args.port}: {exc}", broken)
    server.daemon_threads = True

    def stop():
        worker.narrate("shutdown")
        server.shutdown()

    def on_sigterm(signum, frame):
        if "ignore-sigterm" not in worker.broken:
            threading.Thread(target=stop, daemon=True).start()

    worker.stop = stop

    signal.signal(signal.SIGTERM, on_sigterm)
    worker.narrate("ready")
    server.serve_forever(poll_interval=0.05)
    sys.exit(1 if "bad-exit-codes" in worker.broken else 0)


if __name__ == "__main__":
    main()
