"""The `reference-worker` command: arguments (M0-W-1100/1101) and the startup sequence
(M0-W-1110/1111): validate → load the model with progress events → listen → ready.

Exit status: 0 after a graceful shutdown; 1 for invalid arguments (a message on stderr names
the argument and the reason) and for any startup failure (an `error` narration event with
code, message, gpu_device, model path, and VRAM required/available when that is the cause).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.narration import Narrator

DEFAULT_MAX_TOKENS_OUT = 2048
DEFAULT_INFERENCE_TIMEOUT_S = 300.0
DEFAULT_RESIDENCY_CHECK_S = 60.0
DEFAULT_SHUTDOWN_GRACE_S = 3.0
MAX_SHUTDOWN_GRACE_S = 4.0  # M0-W-1630: 5 s for the whole shutdown; the last second is for cancel and exit


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # M0-W-1100: invalid arguments are a startup failure, exit 1 (argparse's own is 2).
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _uuid(text: str) -> str:
    try:
        canonical = str(uuid.UUID(text))
    except ValueError:
        canonical = None
    if canonical != text.lower():
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID (expected 8-4-4-4-12 hex digits)")
    return text


def _readable_file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return os.path.abspath(path)  # as given, links kept: messages name the path the operator passed


def _int_in(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range (must be {bound})")
        return value
    return parse


def _seconds_up_to(high: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not (0 < value <= high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {high:g} seconds")
        return value
    return parse


_positive_seconds = _seconds_up_to(float("inf"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reference-worker",
                     description="M0 reference worker: loads one GGUF model and streams tokens over SSE.")
    required = parser.add_argument_group("required arguments (M0-W-1100)")
    required.add_argument("--worker-id", required=True, type=_uuid, help="this worker's UUID")
    required.add_argument("--model", required=True, type=_readable_file, help="path of the .gguf model file")
    required.add_argument("--gpu-device", required=True, type=_int_in(0), help="CUDA device id (0, 1, ...)")
    required.add_argument("--port", required=True, type=_int_in(1024, 65535), help="HTTP port, 1024-65535, free")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: M0 has no authentication)")
    parser.add_argument("--backend", choices=("cuda", "numpy"), default="cuda",
                        help="cuda (weights in VRAM, the conformant worker) or numpy (host memory, for "
                             "machines without a GPU); never chosen silently (default cuda)")
    parser.add_argument("--tokenizer-json", type=_readable_file, default=None,
                        help="tokenizer.json for the hf-json tokenizer (default: tokenizer.json beside the "
                             "model when there is one, else the model's own vocabulary, gguf-bpe)")
    parser.add_argument("--max-tokens-in", type=_int_in(1), default=None,
                        help="longest prompt in tokens (default: the model's context length)")
    parser.add_argument("--max-tokens-out", type=_int_in(1, DEFAULT_MAX_TOKENS_OUT), default=DEFAULT_MAX_TOKENS_OUT,
                        help="largest max_tokens a request may ask for (default 2048)")
    parser.add_argument("--inference-timeout-sec", type=_positive_seconds, default=DEFAULT_INFERENCE_TIMEOUT_S,
                        help="a job running longer ends with INFERENCE_TIMEOUT (default 300)")
    parser.add_argument("--kv-cache-size-mb", type=_int_in(1), default=None,
                        help="KV-cache size in MiB, allocated once at startup and used by every request; "
                             "a request whose prompt + max_tokens needs more positions ends with VRAM_OOM; "
                             "startup fails with INSUFFICIENT_VRAM when it cannot hold one position "
                             "(default: auto, the positions a request can reach: the model's context "
                             "length, or --max-tokens-in + --max-tokens-out when that is smaller; never "
                             "more than that even when the budget is larger)")
    parser.add_argument("--vram-budget-mb", type=_int_in(1), default=None,
                        help="device memory the cuda backend may use, in MiB (default: all free "
                             "memory); startup fails with INSUFFICIENT_VRAM when the model needs more")
    parser.add_argument("--residency-check-sec", type=_positive_seconds, default=DEFAULT_RESIDENCY_CHECK_S,
                        help="seconds between VRAM residency checks, M0-W-1012 (default 60)")
    parser.add_argument("--shutdown-grace-sec", type=_seconds_up_to(MAX_SHUTDOWN_GRACE_S),
                        default=DEFAULT_SHUTDOWN_GRACE_S,
                        help="on shutdown, how long the running job may finish before it is cancelled "
                             "(default 3, at most 4: the whole shutdown takes under 5 s)")
    return parser


def _port_problem(host: str, port: int) -> str | None:
    """Why the worker could not listen on host:port, or None when it can."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"argument --host: cannot resolve {host!r} ({exc.strerror})"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself will
        try:
            probe.bind(address)
        except OSError as exc:
            return f"argument --port: port {port} is not available on {host} ({exc.strerror})"
    return None


def _max_positions(args: argparse.Namespace) -> int | None:
    """The most positions a request can reach (prompt + max_tokens), None: the context length."""
    return None if args.max_tokens_in is None else args.max_tokens_in + args.max_tokens_out


def _fail(narrator: Narrator, error: WorkerError, model_path: str) -> int:
    """M0-W-1111: log the failure with its context and exit 1."""
    narrator.emit("error", **{**error.details, "code": error.code.value, "message": error.message,
                              "model_path": model_path})
    return 1


class _StartupInterrupted(BaseException):  # like KeyboardInterrupt: not an error to catch
    """SIGTERM or SIGINT arrived before the worker was serving."""


def _interrupt_startup(signum: int, _frame) -> None:
    raise _StartupInterrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _port_problem(args.host, args.port)
    if problem:
        parser.error(problem)

    narrator = Narrator(args.worker_id, args.model, args.gpu_device)
    # A signal during startup is a shutdown request too: stop loading, log it, exit 0. Once
    # serving, the server installs its own graceful handlers.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt_startup)
    try:
        return _start_and_serve(args, narrator)
    except _StartupInterrupted as signal_name:
        narrator.emit("shutdown", reason=f"{signal_name} during startup")
        return 0


def _start_and_serve(args: argparse.Namespace, narrator: Narrator) -> int:
    narrator.emit("startup", backend=args.backend, host=args.host, port=args.port)
    narrator.emit("model_load_start", model_path=args.model)
    # Imported here so `--help` and argument errors stay fast and need no numerical stack.
    from reference_worker.engine import Engine
    from reference_worker.server import Limits, WorkerServer

    try:
        engine = Engine.load(
            args.model, backend=args.backend, device=args.gpu_device, kv_cache_size_mb=args.kv_cache_size_mb,
            vram_budget_bytes=None if args.vram_budget_mb is None else args.vram_budget_mb * 2**20,
            tokenizer_json=args.tokenizer_json, max_positions=_max_positions(args),
            on_progress=lambda percent: narrator.emit("model_load_progress", percent=percent))
    except WorkerError as exc:
        return _fail(narrator, exc, args.model)
    except Exception as exc:  # noqa: BLE001 - an unexpected load failure is still MODEL_LOAD_FAILED
        return _fail(narrator, WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"{type(exc).__name__}: {exc}"), args.model)

    try:
        narrator.emit("model_load_complete", model=engine.model_name, quant_kind=engine.quant_kind,
                      tokenizer_kind=engine.tokenizer_kind, backend=engine.backend, resident=engine.resident,
                      kv_cache_positions=engine.kv_cache_positions, kv_cache_bytes=engine.cache.nbytes,
                      vram_bytes_used=engine.vram_bytes_used)
        server = WorkerServer(engine, narrator, args.host, args.port,
                              Limits(args.max_tokens_out, args.max_tokens_in, engine.vocab_size),
                              args.inference_timeout_sec, args.residency_check_sec, args.shutdown_grace_sec)
    except BaseException as exc:
        engine.close()  # M0-W-1111: free what was loaded before leaving
        if isinstance(exc, OSError):
            return _fail(narrator, WorkerError(ErrorCode.INTERNAL, f"cannot listen on {args.host}:{args.port}: "
                                                                   f"{exc.strerror or exc}"), args.model)
        raise
    narrator.emit("ready", url=f"http://{args.host}:{server.port}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
