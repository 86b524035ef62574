"""Starts and stops worker processes from a command template, and records what they say.

The template is a shell-like string with the placeholders {model}, {port}, {worker_id} and
{gpu_device}; arguments can be replaced or dropped per start (for CLI validation scenarios).
Every wait is bounded: a worker that never gets ready, or never exits, is reported, killed
and never waited on forever.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OutputLine:
    stream: str
    text: str
    arrived: float


@dataclass
class WorkerProcess:
    """A running (or finished) worker process and everything it printed."""

    argv: list[str]
    port: int
    worker_id: str
    gpu_device: str
    model: str
    popen: subprocess.Popen
    started: float
    lines: list[OutputLine] = field(default_factory=list)
    ready_at: float | None = None
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def narration(self) -> list[dict]:
        """Every output line (stdout or stderr) that is a JSON object, in order."""
        records = []
        for line in self.lines:
            try:
                record = json.loads(line.text)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def alive(self) -> bool:
        return self.popen.poll() is None

    def serving(self) -> bool:
        """Alive and accepting connections. A worker that crashed or shut down may still be
        exiting, its port already closed: that one is not serving (a slow answer still is)."""
        if not self.alive():
            return False
        try:
            requests.get(f"{self.base_url}/health", timeout=5)
        except requests.ConnectionError:
            return False
        except requests.RequestException:
            pass
        return True

    def wait_exit(self, timeout_s: float) -> int | None:
        """The exit status, or None if the process still runs after `timeout_s`."""
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self.join_output()
        return code

    def join_output(self) -> None:
        for reader in self._readers:
            reader.join(timeout=2)

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            if self.wait_exit(grace_s) is None:
                self.popen.kill()
                self.wait_exit(grace_s)
        self.join_output()
        return self.popen.returncode

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll GET /health until it answers 200; False on exit or timeout."""
        stop_at = time.monotonic() + timeout_s
        while time.monotonic() < stop_at:
            if not self.alive():
                return False
            try:
                if requests.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    self.ready_at = time.monotonic()
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False


class Launcher:
    """Builds worker command lines from a template and starts them."""

    def __init__(self, template: str, model: str, gpu_device: str = "0"):
        self.template = template
        self.model = model
        self.gpu_device = gpu_device

    def argv(self, *, port: int, worker_id: str, model: str | None = None,
             replace: dict[str, str | None] | None = None, extra: list[str] | None = None) -> list[str]:
        """The command for one start. `replace` maps an option (`--port`) to a new value,
        or to None to drop the option and its value; `extra` is appended."""
        values = {"model": model or self.model, "port": str(port), "worker_id": worker_id,
                  "gpu_device": self.gpu_device}
        argv = [part.format(**values) for part in shlex.split(self.template)]
        for option, value in (replace or {}).items():
            if option in argv:
                at = argv.index(option)
                if value is None:
                    del argv[at:at + 2]
                else:
                    argv[at + 1] = value
            elif value is not None:
                argv += [option, value]
        return argv + list(extra or [])

    def start(self, *, model: str | None = None, port: int | None = None, worker_id: str | None = None,
              replace: dict[str, str | None] | None = None, extra: list[str] | None = None) -> WorkerProcess:
        port = port or free_port()
        worker_id = worker_id or str(uuid.uuid4())
        argv = self.argv(port=port, worker_id=worker_id, model=model, replace=replace, extra=extra)
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        proc = WorkerProcess(argv=argv, port=port, worker_id=worker_id, gpu_device=self.gpu_device,
                             model=model or self.model, popen=popen, started=time.monotonic())
        for name, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            reader = threading.Thread(target=_pump, args=(pipe, name, proc.lines), daemon=True)
            reader.start()
            proc._readers.append(reader)
        return proc


def _pump(pipe, name: str, lines: list[OutputLine]) -> None:
    for raw in iter(pipe.readline, b""):
        lines.append(OutputLine(name, raw.decode("utf-8", "replace").rstrip("\r\n"), time.monotonic()))
    pipe.close()
