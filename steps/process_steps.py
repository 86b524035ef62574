"""Steps that start worker processes themselves: CLI validation and startup failures (§5,
§6.2), narration logs (M0-W-1900, M0-W-1621), SIGTERM and /shutdown (M0-W-1340)."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
from pytest_bdd import given, parsers, then, when

from steps.client import WorkerClient, read_stream

#: A job whose prompt is distinctive enough to look for in the worker's output.
SHORT_JOB = {"prompt": "Say hello to the M0 conformance harness", "max_tokens": 2, "temperature": 0}
CONTEXT_FIELDS = ["worker_id", "model_ref", "gpu_device", "event"]


# --- Given: things that make a start fail ---------------------------------------------

@pytest.fixture
def busy_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


@given("a port that another program listens on", target_fixture="busy_port")
def busy_port(busy_socket) -> int:
    return busy_socket.getsockname()[1]


@given(parsers.parse("a model file that is {case}"), target_fixture="bad_model")
def bad_model(case, tmp_path, target) -> str:
    path = tmp_path / "model.gguf"
    if case == "random bytes, not GGUF":
        path.write_bytes(os.urandom(64 * 1024))
    elif case == "the first 4096 bytes of a GGUF":
        if not target.model or not os.path.isfile(target.model):
            pytest.skip("not verifiable: the model file is not on this machine (pass --model)")
        with open(target.model, "rb") as src:
            path.write_bytes(src.read(4096))
    elif case == "a GGUF header of version 99":
        path.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(4096))
    elif case == 'a GGUF whose general.architecture is "mamba"':
        _write_gguf_without_tensors(path, "mamba")
    else:
        raise ValueError(f"no such model file case: {case}")
    return str(path)


def _write_gguf_without_tensors(path, architecture: str) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("unsupported-architecture-test")
    writer.add_context_length(128)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@given("the GPU keeps less free memory than the model file needs", target_fixture="vram_hog")
def vram_hog(target):
    """Hold all but half the model's size of free GPU memory in a helper process (CuPy)."""
    if not target.model or not os.path.isfile(target.model):
        pytest.skip("not verifiable: the model file is not on this machine (pass --model)")
    leave = os.path.getsize(target.model) // 2
    # Plain allocations of 1 GiB, then 64 MiB, then 1 MiB while more than `leave` stays free: a
    # single block of nearly all free memory is refused by the driver on large GPUs.
    code = ("import sys, cupy\n"
            f"cupy.cuda.Device({int(target.launcher.gpu_device)}).use()\n"
            "blocks = []\n"
            "for size in (1 << 30, 1 << 26, 1 << 20):\n"
            f"    while cupy.cuda.runtime.memGetInfo()[0] - size >= {leave}:\n"
            "        try:\n"
            "            blocks.append(cupy.cuda.runtime.malloc(size))\n"
            "        except cupy.cuda.runtime.CUDARuntimeError:\n"
            "            break\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n")
    hog = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    line = hog.stdout.readline()
    if line.strip() != "held":
        hog.kill()
        pytest.skip(f"not verifiable: could not hold GPU memory with CuPy: {hog.stderr.read()[-300:]}")
    yield hog
    hog.stdin.close()
    hog.wait(timeout=30)


# --- When: starting and stopping ------------------------------------------------------

@when("the worker is started", target_fixture="proc")
def start(processes):
    return processes.start()


@when(parsers.parse('the worker is started with "{option}" set to "{value}"'), target_fixture="proc")
def start_with(processes, option, value):
    return processes.start(replace={option: None if value == "(missing)" else value})


@when(parsers.parse('the worker is started with the extra arguments "{arguments}"'), target_fixture="proc")
def start_with_extra(processes, arguments):
    return processes.start(extra=shlex.split(arguments))


@when("a second worker is started on another port", target_fixture="second_proc")
def start_second(processes):
    return processes.start()


@when("it becomes ready too")
def second_ready(second_proc, target):
    becomes_ready(second_proc, target)


@when("the first worker receives SIGTERM")
def sigterm_first(proc):
    proc.signal(signal.SIGTERM)


@then("the second worker completes a job")
def second_completes(second_proc, jobs, target):
    stream = jobs.execute(WorkerClient(second_proc.base_url, target.request_timeout_s), SHORT_JOB)
    assert stream.terminal is not None and stream.terminal.name == "end", \
        f"the second worker's job: {stream.status} {stream.names[-3:]} {stream.body!r}"


@when("the worker is started on that port", target_fixture="proc")
def start_on_port(processes, busy_port):
    return processes.start(port=busy_port)


@when("the worker is started with that model", target_fixture="proc")
def start_with_model(processes, bad_model):
    return processes.start(model=bad_model)


@when("it becomes ready")
def becomes_ready(proc, target):
    assert proc.wait_ready(target.startup_timeout_s), \
        f"not ready within {target.startup_timeout_s:g} s (exit {proc.popen.poll()}): {proc.output[-1500:]}"


@when("it receives SIGTERM", target_fixture="signalled_at")
def sigterm(proc) -> float:
    proc.signal(signal.SIGTERM)
    return time.monotonic()


@when("a client executes a short job on it", target_fixture="stream")
def short_job(proc, jobs, target):
    return jobs.execute(WorkerClient(proc.base_url, target.request_timeout_s), SHORT_JOB)


@when("a client executes a greedy job on it twice", target_fixture="streams")
def greedy_twice(proc, jobs, target):
    client = WorkerClient(proc.base_url, target.request_timeout_s)
    greedy = {"prompt": "Write a haiku about GPU computing", "max_tokens": 8, "temperature": 0}
    return [jobs.execute(client, greedy) for _ in range(2)]


@when("a client starts a long job on it", target_fixture="running")
def long_job(proc, jobs, target):
    client = WorkerClient(proc.base_url, target.request_timeout_s)
    job = jobs.start_running(client, client.health().json().get("context_length"))
    assert job.stream.tokens, f"the long job streamed no token: {job.stream.names} {job.stream.body!r}"
    return job


@when("a client posts /shutdown", target_fixture="shutdown_answer")
def post_shutdown(proc, target):
    return WorkerClient(proc.base_url, target.request_timeout_s).post_json("/shutdown", {})


# --- Then: exit status and output ------------------------------------------------------

@then("it exits with a non-zero status within the startup timeout")
def exits_non_zero(proc, target):
    code = proc.wait_exit(target.startup_timeout_s)
    assert code is not None, f"still running {target.startup_timeout_s:g} s later; it should have refused to start"
    assert code != 0, f"exit status 0 for an invalid start; output: {proc.output[-500:]}"


@then(parsers.parse("it exits with status {status:d} within the startup timeout"))
def exits_with_status(proc, target, status):
    code = proc.wait_exit(target.startup_timeout_s)
    assert code == status, f"exit status {code}, expected {status}; output: {proc.output[-500:]}"


@then("it exits with status 0 within the shutdown timeout")
def exits_zero_after_shutdown(proc, shutdown_timeout_s):
    code = proc.wait_exit(shutdown_timeout_s)
    assert code is not None, f"still running {shutdown_timeout_s:g} s after being asked to shut down"
    assert code == 0, f"exit status {code} after shutdown; output: {proc.output[-500:]}"


@then(parsers.parse("it exits with status 0 within {seconds:g} seconds"))
def exits_zero_within(proc, signalled_at, seconds, measure):
    code = proc.wait_exit(seconds)
    measure(f"exit after SIGTERM: {time.monotonic() - signalled_at:.2f} s")
    assert code == 0, f"exit status {code} ({'still running' if code is None else 'exited'}) {seconds:g} s after SIGTERM"


@then(parsers.parse('its output names "{text}"'))
@then(parsers.parse('its output contains "{text}"'))
def output_names(proc, text):
    proc.join_output()
    assert text in proc.output, f"output does not mention {text!r}: {proc.output[-800:]!r}"


@then("its output names the port")
def output_names_port(proc):
    proc.join_output()
    assert str(proc.port) in proc.output, f"output does not mention port {proc.port}: {proc.output[-800:]!r}"


@then("its output names the model path and the GPU device")
def output_names_context(proc):
    proc.join_output()
    assert proc.model in proc.output, f"output does not name the model path {proc.model}: {proc.output[-800:]!r}"
    device = re.compile(rf"(gpu[_ -]?device|device)\W{{0,4}}{re.escape(proc.gpu_device)}\b", re.IGNORECASE)
    assert device.search(proc.output), f"output does not name GPU device {proc.gpu_device}: {proc.output[-800:]!r}"


@then("its output names the required and available bytes, the GPU device and the model path")
def output_names_vram(proc):
    output_names_context(proc)
    for word in ("required", "available"):
        assert re.search(rf"{word}\D{{0,40}}\d{{6,}}", proc.output, re.IGNORECASE), \
            f"output gives no {word} byte count: {proc.output[-800:]!r}"


@then("it answers GET /health with HTTP 200 on the port it was given")
def answers_on_port(proc, target):
    assert proc.wait_ready(target.startup_timeout_s), \
        f"no HTTP 200 from {proc.base_url}/health within {target.startup_timeout_s:g} s " \
        f"(exit {proc.popen.poll()}): {proc.output[-1500:]}"


@then(parsers.parse("it became ready within {seconds:d} seconds of starting"))
def ready_within(proc, seconds, measure):
    took = proc.ready_at - proc.started
    measure(f"start to ready: {took:.2f} s")
    assert took <= seconds, f"ready after {took:.1f} s"


# --- Then: narration (M0-W-1900, M0-W-1621) ----------------------------------------------

def _events(proc) -> list[dict]:
    return [r for r in proc.narration() if "event" in r]


@then(parsers.parse("its narration has the events {names}, in this order"))
def narration_order(proc, names):
    wanted = [n.strip() for n in names.replace(" and ", ", ").split(",")]
    seen = [r["event"] for r in _events(proc)]
    positions = [seen.index(name) if name in seen else -1 for name in wanted]
    assert -1 not in positions, f"narration lacks {[w for w, p in zip(wanted, positions) if p < 0]}; saw {seen}"
    assert positions == sorted(positions), f"narration order {seen}, expected {wanted} in order"


@then("every narration event carries worker_id, model_ref, gpu_device and event")
def narration_context(proc):
    events = _events(proc)
    assert events, f"no narration events (JSON lines with `event`) in the output: {proc.output[-500:]!r}"
    for record in events:
        missing = [f for f in CONTEXT_FIELDS if f not in record]
        assert not missing, f"narration event {record.get('event')!r} lacks {missing}: {record}"


@then("every narration event has the worker_id the worker was given")
def narration_worker_id(proc):
    wrong = [r for r in _events(proc) if r.get("worker_id") != proc.worker_id]
    assert not wrong, f"worker_id differs from {proc.worker_id}: {wrong[:2]}"


@then(parsers.parse("its narration has model_load_progress events with percent {percents}, in this order"))
def progress_events(proc, percents):
    wanted = [int(p) for p in re.findall(r"\d+", percents)]
    seen = [r.get("percent") for r in _events(proc) if r["event"] == "model_load_progress"]
    assert all(p in seen for p in wanted), f"model_load_progress percents {seen}, expected {wanted}"
    assert seen == sorted(seen), f"model_load_progress percents out of order: {seen}"


@then("they come between model_load_start and model_load_complete")
def progress_inside_load(proc):
    seen = [r["event"] for r in _events(proc)]
    progress = [i for i, e in enumerate(seen) if e == "model_load_progress"]
    assert "model_load_start" in seen and "model_load_complete" in seen, f"narration: {seen}"
    assert seen.index("model_load_start") < progress[0] and progress[-1] < seen.index("model_load_complete"), \
        f"progress events outside the load: {seen}"


@then("its narration has execute_start and execute_end events with that job's job_id")
def narration_job(proc, jobs):
    job_id = jobs.last.request["job_id"]
    stop_at = time.monotonic() + 5  # narration lines may trail the stream a little
    while time.monotonic() < stop_at:
        events = {r["event"] for r in _events(proc) if r.get("job_id") == job_id}
        if {"execute_start", "execute_end"} <= events:
            return
        time.sleep(0.05)
    raise AssertionError(f"no execute_start and execute_end with job_id {job_id}: "
                         f"{[(r['event'], r.get('job_id')) for r in _events(proc)]}")


@then("its narration has an execute_end event with the fields tokens_out and decode_time_ms")
def narration_metrics(proc, jobs):
    narration_job(proc, jobs)
    job_id = jobs.last.request["job_id"]
    end = next(r for r in _events(proc) if r["event"] == "execute_end" and r.get("job_id") == job_id)
    missing = [f for f in ("tokens_out", "decode_time_ms") if f not in end]
    assert not missing, f"execute_end lacks {missing}: {end}"


@then("its output does not contain the job's prompt")
def prompt_not_logged(proc):
    time.sleep(0.2)  # let the job's narration reach the output
    assert SHORT_JOB["prompt"] not in proc.output, "the raw prompt appears in the worker's output"


GPU_FREE_PROBE = ("import cupy; cupy.cuda.Device({device}).use(); "
                  "print(cupy.cuda.runtime.memGetInfo()[0])")


def gpu_free_bytes(device: str) -> int | None:
    done = subprocess.run([sys.executable, "-c", GPU_FREE_PROBE.format(device=int(device))],
                          capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip()) if done.returncode == 0 else None


@given("the GPU's free memory is noted", target_fixture="gpu_free_before")
def note_gpu_free(target) -> int:
    free = gpu_free_bytes(target.launcher.gpu_device)
    if free is None:
        pytest.skip("not verifiable: CuPy cannot read the GPU's free memory on this machine")
    return free


@then(parsers.parse("the GPU's free memory is back within {mib:d} MiB of what was noted"))
def gpu_free_back(target, gpu_free_before, mib):
    after = gpu_free_bytes(target.launcher.gpu_device)
    assert after is not None and after >= gpu_free_before - mib * 2**20, \
        f"free GPU memory {gpu_free_before} before the worker, {after} after it exited"


@then("its narration has a shutdown event")
def narration_shutdown(proc):
    proc.join_output()
    assert "shutdown" in [r["event"] for r in _events(proc)], f"no shutdown event: {proc.output[-500:]!r}"


@then("the job's stream has ended")
def job_stream_ended(running):
    stream = read_stream(running.stream, 5)
    assert stream.closed is not None and stream.read_error != "stream still open after 5 s", \
        "the job's stream stayed open after the worker exited"


@then(parsers.parse("the shutdown is answered with HTTP {status:d}"))
def shutdown_status(shutdown_answer, status):
    assert shutdown_answer.status_code == status, f"/shutdown answered HTTP {shutdown_answer.status_code}"


@then("a new /execute request is answered with HTTP 503 or the connection is refused")
def refuses_after_shutdown(proc, target):
    client = WorkerClient(proc.base_url, target.request_timeout_s)
    try:
        stream = client.execute({"job_id": "after-shutdown", "prompt": "Hello", "max_tokens": 1}, wait=False)
    except Exception:  # connection refused: the worker is already gone, which is fine
        return
    stream.close()
    assert stream.status == 503, f"/execute after /shutdown answered HTTP {stream.status}"
