"""Per-scenario fixtures: the shared worker's client, the jobs a scenario started, and the
worker processes it started itself (all cleaned up at teardown)."""
from __future__ import annotations

import pytest

from steps.jobs import JobBook
from steps.launcher import WorkerProcess


@pytest.fixture
def jobs(target):
    book = JobBook(timeout_s=target.request_timeout_s)
    yield book
    book.cleanup()


class ProcessBook:
    """Worker processes started by one scenario; all stopped at teardown."""

    def __init__(self, target):
        self.target = target
        self.started: list[WorkerProcess] = []

    def start(self, **kwargs) -> WorkerProcess:
        proc = self.target.launcher.start(**kwargs)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(grace_s=2)


@pytest.fixture
def processes(target):
    book = ProcessBook(target)
    yield book
    book.stop_all()


@pytest.fixture
def shutdown_timeout_s(pytestconfig) -> float:
    return pytestconfig.getoption("shutdown_timeout")


@pytest.fixture
def measure(request):
    """Record a measured figure with the scenario; the run's summary and results show it."""
    def record(text: str) -> None:
        request.node.user_properties.append(("measurement", text))
    return record
