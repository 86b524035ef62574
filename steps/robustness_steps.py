"""Steps of the robustness profile (features/robustness.feature, opt-in with --robustness):
malformed models (steps.gguf_corpus), random request bodies (steps.random_bodies) and a soak of
concurrent jobs (steps.soak). Each check is bounded by the --robustness-* counts and budget and
reports what it did (counts, time, and the worker's RSS and threads when it runs here)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from pytest_bdd import given, parsers, then, when

from steps import gguf_corpus, soak
from steps.client import WorkerClient, read_stream
from steps.random_bodies import random_bodies

#: A short job that must complete after the profile's abuse (the worker still serves).
SHORT_JOB = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
#: Findings shown in a failure message; the rest are counted.
SHOWN = 12


@dataclass(frozen=True)
class Profile:
    seed: int
    bodies: int
    jobs: int
    clients: int
    budget_s: float
    load_deadline_s: float


@pytest.fixture
def profile(pytestconfig) -> Profile:
    option = pytestconfig.getoption
    return Profile(option("robustness_seed"), option("robustness_bodies"), option("robustness_jobs"),
                   option("robustness_clients"), option("robustness_budget"), option("robustness_load_deadline"))


def _fail_with(findings: list[str], what: str) -> None:
    shown = "\n".join(findings[:SHOWN])
    more = f"\n... and {len(findings) - SHOWN} more" if len(findings) > SHOWN else ""
    pytest.fail(f"{len(findings)} {what}:\n{shown}{more}")


def process_usage(pid: int | None) -> str | None:
    """RSS and thread count of a local process (psutil), or None when it is not ours to see."""
    if pid is None:
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        return f"RSS {process.memory_info().rss / 2**20:.0f} MiB, {process.num_threads()} threads"
    except psutil.Error:
        return None


def record_usage(target, measure, before: str | None) -> None:
    """Record the worker's RSS and threads before (as sampled) and now, when it runs here."""
    after = process_usage(target.local_pid())
    if before and after:
        measure(f"worker before: {before}; after: {after}")


# --- malformed models (M0-W-1210, M0-W-1211, M0-W-1212) ---------------------------------

@dataclass
class Refusal:
    case: gguf_corpus.Malformed
    exit_status: int | None = None
    seconds: float = 0.0
    output: str = ""
    serving: bool = False

    def finding(self) -> str | None:
        name = self.case.case
        if self.exit_status is None:
            state = "loaded it and serves" if self.serving else "neither exited nor served"
            return f"{name}: still running after the load deadline ({state})"
        if self.exit_status != 1:
            how = f"killed by signal {-self.exit_status}" if self.exit_status < 0 else f"exit status {self.exit_status}"
            return f"{name}: {how}, not 1 (M0-W-1210); output ends: {self.output[-200:]!r}"
        if "MODEL_LOAD_FAILED" not in self.output:
            return f"{name}: exit status 1 but no MODEL_LOAD_FAILED in its output: {self.output[-200:]!r}"
        return None


@given(parsers.parse("the malformed copies of the model under test with {family}"), target_fixture="malformed")
def malformed(family, target) -> list[gguf_corpus.Malformed]:
    if not target.model or not os.path.isfile(target.model):
        pytest.skip("not verifiable: the model file is not on this machine (pass --model)")
    return gguf_corpus.family(gguf_corpus.Layout.read(Path(target.model)), family)


@when("the worker is started with each of them", target_fixture="refusals")
def start_each(malformed, processes, target, profile, tmp_path, measure) -> list[Refusal]:
    stop_at = time.monotonic() + profile.budget_s
    refusals = []
    for case in malformed:
        if time.monotonic() >= stop_at:
            break
        path = case.write(Path(target.model), tmp_path / "malformed.gguf")
        proc = processes.start(model=str(path))
        status = proc.wait_exit(profile.load_deadline_s)
        refusal = Refusal(case, status, time.monotonic() - proc.started)
        if status is None:
            refusal.serving = proc.serving()
            proc.stop(grace_s=2)
        proc.join_output()
        refusal.output = proc.output
        refusals.append(refusal)
        path.unlink()
    slowest = max((r.seconds for r in refusals), default=0.0)
    measure(f"{len(refusals)} of {len(malformed)} malformed models tried, slowest answer {slowest:.1f} s")
    return refusals


@then("each start exits with status 1 and names MODEL_LOAD_FAILED within the load deadline")
def each_refused(refusals):
    findings = [f for f in (r.finding() for r in refusals) if f]
    if findings:
        _fail_with(findings, f"of {len(refusals)} malformed models were not refused as M0-W-1210 asks")


# --- random bodies (M0-W-1302, M0-W-1500) -------------------------------------------------

@dataclass
class Answer:
    body: object  # a RandomBody
    status: int | None = None
    json: object = None
    error: str | None = None


def _send(client: WorkerClient, body) -> Answer:
    """POST one random body; a stream it starts is cancelled and read to its end."""
    try:
        if body.path == "/execute":
            stream = client.execute(raw=body.data, wait=False)
            answer = Answer(body, stream.status, stream.body)
            if stream.content_type.startswith("text/event-stream"):
                client.cancel(_job_id(body))
                read_stream(stream, client.timeout_s)
                problem = soak.order_problem(stream.names)
                if stream.read_error or problem:
                    answer.error = f"accepted, but its stream: {stream.read_error or problem} {stream.names[-3:]}"
            return answer
        response = client.session.post(client.url(body.path), data=body.data, timeout=client.timeout_s,
                                       headers={"Content-Type": "application/json"})
        try:
            parsed = response.json()
        except ValueError:
            parsed = response.text[:200]
        return Answer(body, response.status_code, parsed)
    except requests.RequestException as exc:
        return Answer(body, error=f"no answer: {type(exc).__name__}: {exc}")


def _job_id(body) -> str | None:
    try:
        return json.loads(body.data).get("job_id")
    except (ValueError, AttributeError):
        return None


@when("the client sends the random request bodies", target_fixture="answers")
def send_random_bodies(target, profile, measure) -> list[Answer]:
    client = WorkerClient(target.shared_base_url(), target.request_timeout_s)
    before = process_usage(target.local_pid())
    stop_at = time.monotonic() + profile.budget_s
    answers, unanswered_in_a_row, started = [], 0, time.monotonic()
    for body in random_bodies(profile.seed, profile.bodies):
        if time.monotonic() >= stop_at or unanswered_in_a_row >= 20:
            break  # out of time, or the worker is gone: the answers so far say so
        answer = _send(client, body)
        answers.append(answer)
        unanswered_in_a_row = unanswered_in_a_row + 1 if answer.status is None else 0
        if answer.status is None:
            client = WorkerClient(client.base_url, client.timeout_s)  # a fresh connection after a drop
    elapsed = time.monotonic() - started
    statuses = sorted({a.status for a in answers if a.status is not None})
    measure(f"{len(answers)} of {profile.bodies} random bodies (seed {profile.seed}) in {elapsed:.1f} s; "
            f"statuses {statuses}")
    record_usage(target, measure, before)
    return answers


@then("every body got a complete answer with a status below 500")
def answered_below_500(answers):
    findings = [f"{a.body.describe()}: {a.error or f'HTTP {a.status} {a.json!r}'[:300]}"
                for a in answers if a.error or a.status >= 500]
    if findings:
        _fail_with(findings, f"of {len(answers)} random bodies got no complete answer below 500")


@then("every refusal is JSON with an error code, INVALID_REQUEST for a 400")
def refusals_have_codes(answers):
    findings = []
    for a in answers:
        if a.status is None or not 400 <= a.status < 500:
            continue
        code = a.json.get("code") if isinstance(a.json, dict) else None
        if not isinstance(code, str) or not code or (a.status == 400 and code != "INVALID_REQUEST"):
            findings.append(f"{a.body.describe()}: HTTP {a.status} with {a.json!r}"[:400])
    if findings:
        _fail_with(findings, "refusals without the stable error code of M0-W-1500")


@then("the worker still completes a job")
def still_serves(target):
    client = WorkerClient(target.shared_base_url(), target.request_timeout_s)
    try:
        stream = client.execute({**SHORT_JOB, "job_id": f"after-{time.monotonic_ns()}"})
    except requests.RequestException as exc:
        pytest.fail(f"the worker no longer answers: {type(exc).__name__}: {exc}")
    assert stream.terminal is not None and stream.terminal.name == "end", \
        f"a job after the check: HTTP {stream.status} {stream.names[-3:]} {stream.body!r} {stream.read_error}"


# --- the soak (M0-W-1311, M0-W-1330, M0-SYS-6.3.5, M0-W-1611) -----------------------------

@when("concurrent clients run the soak's jobs, cancelling some and dropping others", target_fixture="soaked")
def run_soak(target, profile, measure) -> list[soak.SoakJob]:
    started = time.monotonic()
    base_url = target.shared_base_url()
    before = process_usage(target.local_pid())
    runner = soak.Soak(base_url, clients=profile.clients, deadline_s=2 * target.request_timeout_s,
                       budget_s=profile.budget_s)
    jobs = runner.run(soak.plan(profile.seed, profile.jobs))
    ran = [j for j in jobs if not j.skipped]
    fates = {fate: sum(j.fate == fate for j in ran) for fate in ("keep", "cancel", "drop")}
    cancelled = sum(j.fate == "cancel" and bool(j.events) and j.events[-1][0] == "error" for j in ran)
    measure(f"soak: {len(ran)} of {len(jobs)} jobs from {profile.clients} clients in "
            f"{time.monotonic() - started:.1f} s ({fates['keep']} kept, {fates['cancel']} cancelled "
            f"({cancelled} ended CANCELLED), {fates['drop']} dropped)")
    record_usage(target, measure, before)
    return jobs


@then("every kept stream ends with exactly one terminal event, a cancelled one with CANCELLED or its end")
def soak_streams_end(soaked):
    findings = soak.findings(soaked)
    skipped = sum(j.skipped for j in soaked)
    if skipped:
        findings.append(f"{skipped} jobs not started: the soak stopped early (budget spent or streams hung)")
    if findings:
        _fail_with(findings, f"problems in a soak of {len(soaked)} jobs")


@when(parsers.parse("a client drops a generating stream {count:d} times over, each followed by a short job"),
      target_fixture="restarts")
def drop_repeatedly(target, count, measure) -> list[float | None]:
    client = WorkerClient(target.shared_base_url(), target.request_timeout_s)
    waits = []
    for i in range(count):
        long_job = {"job_id": f"drop-{i}-{time.monotonic_ns()}", "prompt": "Count from one to one hundred:",
                    "max_tokens": 2048, "temperature": 0.8, "seed": i}
        stream = client.execute(long_job, wait=False)
        if stream.status == 200:
            read_stream(stream, client.timeout_s, until=lambda s: bool(s.tokens) or s.terminal is not None)
        stream.close()
        short = client.execute({**SHORT_JOB, "job_id": f"next-{i}-{time.monotonic_ns()}"}, wait=False)
        if short.status == 200:
            read_stream(short, client.timeout_s)
        started = next((e.arrived for e in short.events if e.name == "started"), None)
        waits.append(None if started is None else started - short.sent)
        short.close()
        client.cancel(long_job["job_id"])  # a worker that kept the dropped job is not left running it
    answered = [w for w in waits if w is not None]
    if answered:
        measure(f"next job's started event after a drop: max {max(answered) * 1000:.0f} ms over {len(answered)}")
    return waits


@then(parsers.parse("every short job started within {seconds:g} seconds of its request"))
def restarts_prompt(restarts, seconds):
    slow = [f"drop {i}: " + ("no started event" if w is None else f"{w:.2f} s") for i, w in enumerate(restarts)
            if w is None or w > seconds]
    assert not slow, f"{len(slow)} of {len(restarts)} jobs after a dropped stream were held up: {slow[:SHOWN]}"
