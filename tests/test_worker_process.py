"""The worker as users run it: `reference-worker` started as a process on a synthetic model
(NumPy backend), driven only over HTTP. One worker serves the whole module.

Items of issue 4 covered here: startup narration (2), /execute validation (3), the SSE stream
(4), /health (5), /cancel (6), sequential execution (7), failure handling (8), /metrics (10),
the production server (11). The CLI (1) and shutdown (9) have their own modules.
"""
from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from datetime import datetime, timedelta

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from worker_process import WorkerProcess, build_synthetic_model, execute, iter_events, long_job, names, read_events

LONG_TOKENS = 500  # at about 2-6 ms a token on this model, a job of a second or two
SHORT_JOB = {"prompt": "hi", "max_tokens": 4, "temperature": 0}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    model = build_synthetic_model(tmp_path_factory.mktemp("models"), layers=4)
    process = WorkerProcess(model).wait_ready()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def long_body(worker) -> dict:
    """A body that runs LONG_TOKENS tokens without meeting the end token."""
    return long_job(worker, LONG_TOKENS)


def run_job(worker, job_id, **body):
    response = execute(worker.url, job_id=job_id, **body)
    assert response.status_code == 200, response.text
    return read_events(response)


def assert_well_formed(events, job_id):
    """M0-W-1311: started first, tokens numbered from 0, exactly one terminal event, last."""
    assert events[0].name == "started" and events[0].data["job_id"] == job_id
    tokens = [e for e in events if e.name == "token"]
    assert [t.data["i"] for t in tokens] == list(range(len(tokens)))
    assert names(events) == ["started"] + ["token"] * len(tokens) + [events[-1].name]
    assert events[-1].name in ("end", "error")


def metric(worker, name, **labels) -> float:
    text = requests.get(f"{worker.url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


# --- 2. startup narration -------------------------------------------------------------------

def test_startup_narrates_each_step_in_order_with_the_worker_context(worker):
    startup = [r for r in worker.narration if r["job_id"] is None][:9]
    assert [r["event"] for r in startup] == ["startup", "model_load_start"] + ["model_load_progress"] * 5 + [
        "model_load_complete", "ready"]
    assert [r["percent"] for r in startup if r["event"] == "model_load_progress"] == [0, 25, 50, 75, 100]
    for record in startup:
        assert record["worker_id"] == worker.worker_id
        assert record["gpu_device"] == 0 and record["model_ref"].endswith(".gguf")
    assert any("loading model 50%" in line for line in worker.stderr_lines)
    assert all(line.startswith("{") for line in worker.stdout_lines)


# --- 3. validation --------------------------------------------------------------------------

VALID = {"job_id": "v", "prompt": "hi", "max_tokens": 1, "temperature": 0.5, "seed": 7}
# (field, value just inside, value just outside) for every range of M0-W-1300 and the later
# revision's sampling fields; None as the inside value means "only the outside is tested".
BOUNDARIES = [
    ("job_id", "j", ""), ("job_id", None, 17), ("job_id", None, None),
    ("prompt", "x", ""), ("prompt", "x" * 32768, "x" * 32769), ("prompt", "é" * 32768, "é" * 32769),
    ("prompt", None, ["hi"]), ("prompt", None, "\ud800"), ("job_id", None, "a\udfff"),
    ("max_tokens", 1, 0), ("max_tokens", 2048, 2049), ("max_tokens", None, 1.0), ("max_tokens", None, True),
    ("max_tokens", None, "4"),
    ("temperature", 0.0, -1e-9), ("temperature", 2.0, 2.000001), ("temperature", 0, True),
    ("temperature", 2, "1"),
    ("seed", 0, -1), ("seed", 2**64 - 1, 2**64), ("seed", None, 1.5), ("seed", None, False),
    ("top_p", 1e-9, 0.0), ("top_p", 1.0, 1.000001), ("top_p", None, True),
    ("top_k", 0, -1), ("top_k", None, 2.0), ("top_k", None, False),
    ("min_p", 0.0, -1e-9), ("min_p", 1.0, 1.000001),
    ("repetition_penalty", 1e-9, 0.0), ("repetition_penalty", 2.0, 2.000001),
    ("stop", ["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]), ("stop", [], [""]), ("stop", ["a"], "a"),
    ("stop", None, [1]), ("stop", ["x" * 32], ["x" * 33]),  # "x" is one token
]


_ids = itertools.count()


@pytest.mark.parametrize("field, inside, outside", BOUNDARIES)
def test_each_field_is_accepted_just_inside_its_range_and_refused_just_outside(worker, field, inside, outside):
    job_id = f"bound-{next(_ids)}"
    refused = requests.post(f"{worker.url}/execute", json={**VALID, "job_id": job_id, field: outside}, timeout=10)
    assert refused.status_code == 400
    body = refused.json()
    assert body["code"] == "INVALID_REQUEST" and body["retriable"] is False
    assert body["field"] == field and field in body["message"]
    if inside is not None:
        accepted = {**VALID, "job_id": job_id, field: inside}
        response = requests.post(f"{worker.url}/execute", json=accepted, stream=True, timeout=30)
        assert response.status_code == 200
        assert_well_formed(read_events(response), accepted["job_id"])


def test_top_k_may_be_at_most_the_vocabulary_size(worker):
    vocab_size = worker.health()["vocab_size"]
    refused = requests.post(f"{worker.url}/execute", json={**VALID, "job_id": "k+1", "top_k": vocab_size + 1},
                            timeout=10)
    assert refused.status_code == 400 and refused.json()["field"] == "top_k"
    assert_well_formed(run_job(worker, "k", prompt="hi", max_tokens=1, top_k=vocab_size), "k")


@pytest.mark.parametrize("field", ["job_id", "prompt"])
def test_a_missing_required_field_is_refused_naming_it(worker, field):
    body = {k: v for k, v in VALID.items() if k != field}
    response = requests.post(f"{worker.url}/execute", json=body, timeout=10)
    assert response.status_code == 400 and response.json()["field"] == field


@pytest.mark.parametrize("raw", [b"[]", b'"job"', b"42", b"null", b"{", b"", b"\xff\xfe",
                                 b'{"job_id": "n", "prompt": "hi", "temperature": NaN}'])
def test_a_body_that_is_not_a_json_object_is_refused(worker, raw):
    response = requests.post(f"{worker.url}/execute", data=raw, timeout=10)
    assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"


def test_a_body_over_one_mebibyte_is_refused_and_one_just_under_is_read(worker):
    pad = "x" * (2**20 - len(json.dumps({**VALID, "job_id": "big", "pad": ""})))
    just_under = json.dumps({**VALID, "job_id": "big", "pad": pad}).encode()
    assert len(just_under) == 2**20
    assert_well_formed(read_events(requests.post(f"{worker.url}/execute", data=just_under, stream=True,
                                                 timeout=30)), "big")
    over = requests.post(f"{worker.url}/execute", data=just_under + b" ", timeout=30)
    assert over.status_code == 400 and over.json()["code"] == "INVALID_REQUEST"


def test_unknown_fields_are_ignored(worker):
    assert_well_formed(run_job(worker, "extra", **SHORT_JOB, priority="high", n=3), "extra")


def test_a_job_id_that_is_running_is_refused_with_409(worker, long_body):
    stream = iter_events(execute(worker.url, job_id="twice", **long_body))
    assert next(stream).name == "started"
    again = requests.post(f"{worker.url}/execute", json={"job_id": "twice", **SHORT_JOB}, timeout=10)
    assert again.status_code == 409
    assert again.json()["code"] == "INVALID_REQUEST" and again.json()["field"] == "job_id"
    requests.post(f"{worker.url}/cancel", json={"job_id": "twice"}, timeout=5)
    assert list(stream)[-1].data["code"] == "CANCELLED"
    assert_well_formed(run_job(worker, "twice", **SHORT_JOB), "twice")  # free again once finished


def test_unknown_paths_and_methods_answer_json_without_a_traceback(worker):
    for response in (requests.get(f"{worker.url}/nope", timeout=5), requests.get(f"{worker.url}/execute", timeout=5)):
        assert response.status_code in (404, 405)
        assert response.json()["code"] == "INVALID_REQUEST" and "Traceback" not in response.text


# --- 4. the SSE stream ----------------------------------------------------------------------

def test_a_job_streams_started_tokens_and_end_with_the_spec_payloads(worker):
    response = execute(worker.url, job_id="payloads", prompt="hi", max_tokens=8, temperature=0, seed=42)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = read_events(response)
    assert_well_formed(events, "payloads")
    started, end = events[0].data, events[-1]
    assert started["model"] == worker.health()["model"] and started["seed"] == 42
    assert ISO_UTC.match(started["started_at"])
    for token in events[1:-1]:
        assert isinstance(token.data["t"], str) and isinstance(token.data["token_id"], int)
    assert end.name == "end" and end.data["tokens_out"] == len(events) - 2
    assert isinstance(end.data["decode_time_ms"], int) and end.data["decode_time_ms"] >= 0
    assert end.data["stop_reason"] in ("max_tokens", "eos", "stop_sequence")


def test_an_omitted_seed_is_chosen_by_the_worker_and_reported(worker):
    seed = run_job(worker, "seedless", prompt="hi", max_tokens=1)[0].data["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**64


def test_the_same_seed_and_greedy_sampling_give_the_same_tokens(worker):
    ids = [[e.data["token_id"] for e in run_job(worker, f"repro-{n}", prompt="The quick", max_tokens=12,
                                                  temperature=0.0, seed=5) if e.name == "token"] for n in range(2)]
    assert ids[0] == ids[1] and len(ids[0]) > 0


def test_tokens_arrive_as_they_are_generated_not_in_one_burst(worker, long_body):
    events = run_job(worker, "paced", **long_body)
    tokens = [e.arrived for e in events if e.name == "token"]
    assert len(tokens) == LONG_TOKENS
    # A buffered stream would deliver everything in the last instant; a streamed one spreads
    # the arrivals over the whole generation.
    assert tokens[len(tokens) // 2] - tokens[0] > 0.25 * (tokens[-1] - tokens[0]) > 0


@pytest.mark.parametrize("prompt", ["你好世界", "Hello 👋 World 🌍", "Mixed: 日本語 English العربية"])
def test_token_events_carry_no_replacement_character_although_the_model_emits_stray_bytes(worker, prompt):
    # M0-W-1824 with M0-W-1824's prompts: this random-weights model samples byte tokens that are
    # not UTF-8 (test_engine.py shows it); the worker drops them rather than sending U+FFFD.
    for seed in range(3):
        events = run_job(worker, f"utf8-{seed}", prompt=prompt, max_tokens=20, temperature=0.7, seed=seed)
        assert_well_formed(events, f"utf8-{seed}")
        assert not any("\ufffd" in e.data["t"] for e in events if e.name == "token")


# --- 5. health ------------------------------------------------------------------------------

def test_health_reports_every_required_field_with_its_type(worker):
    health = worker.health()
    assert health["status"] == "healthy"
    assert health["backend"] == "numpy" and health["resident"] is False
    assert isinstance(health["model"], str) and health["quant_kind"] == "Q8_0"
    assert health["vram_bytes_used"] == 0 and health["tokenizer_kind"] == "gguf-bpe"
    assert isinstance(health["vocab_size"], int) and health["vocab_size"] > 0
    assert health["context_length"] == 512
    assert isinstance(health["uptime_seconds"], int) and health["uptime_seconds"] >= 0
    assert health["sm"] is None and health["cuda_runtime_version"] is None


def test_health_and_cancel_answer_while_a_job_runs(worker, long_body):
    stream = iter_events(execute(worker.url, job_id="busy", **long_body))
    assert next(stream).name == "started"
    health = requests.get(f"{worker.url}/health", timeout=2).json()
    assert health["active_job_id"] == "busy"
    assert requests.post(f"{worker.url}/cancel", json={"job_id": "busy"}, timeout=2).status_code == 202
    assert list(stream)[-1].data["code"] == "CANCELLED"


# --- 6. cancel ------------------------------------------------------------------------------

def test_cancel_is_accepted_for_unknown_ids_and_repeatedly(worker):
    for _ in range(3):
        response = requests.post(f"{worker.url}/cancel", json={"job_id": "never-existed"}, timeout=5)
        assert response.status_code == 202


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"job_id": ""}', b'{"job_id": 3}', b"{"])
def test_a_malformed_cancel_is_refused(worker, raw):
    response = requests.post(f"{worker.url}/cancel", data=raw, timeout=5)
    assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"


def test_a_running_job_that_is_cancelled_stops_early_and_ends_cancelled(worker, long_body):
    events = []
    for event in iter_events(execute(worker.url, job_id="stop-me", **long_body)):
        events.append(event)
        if len(events) == 4:  # started and three tokens
            assert requests.post(f"{worker.url}/cancel", json={"job_id": "stop-me"}, timeout=5).status_code == 202
    assert_well_formed(events, "stop-me")
    assert events[-1].name == "error" and events[-1].data["code"] == "CANCELLED"
    assert events[-1].data["retriable"] is False
    assert len(events) - 2 < LONG_TOKENS
    again = requests.post(f"{worker.url}/cancel", json={"job_id": "stop-me"}, timeout=5)
    assert again.status_code == 202  # idempotent after the end too


# --- 7. sequential execution ----------------------------------------------------------------

def test_eight_concurrent_clients_all_complete_one_at_a_time_in_arrival_order(worker):
    results: dict[int, list] = {}
    readers = []
    for n in range(8):
        # Each request is accepted (its headers arrive) before the next is sent: a known order.
        response = execute(worker.url, job_id=f"order-{n}", prompt="hi", max_tokens=40, temperature=0,
                           repetition_penalty=0.1)
        assert response.status_code == 200
        reader = threading.Thread(target=lambda n=n, r=response: results.__setitem__(n, read_events(r)))
        reader.start()
        readers.append(reader)
    for reader in readers:
        reader.join(60)
    spans = []
    for n in range(8):
        assert_well_formed(results[n], f"order-{n}")
        assert results[n][-1].name == "end"
        start = datetime.fromisoformat(results[n][0].data["started_at"])
        spans.append((start, start + timedelta(milliseconds=results[n][-1].data["decode_time_ms"])))
    for (_, previous_end), (start, _) in zip(spans, spans[1:]):
        assert start >= previous_end - timedelta(milliseconds=2)  # never two at once
    ends = [r["job_id"] for r in worker.narration if r["event"] == "execute_end"
            and str(r["job_id"]).startswith("order-")]
    assert ends == [f"order-{n}" for n in range(8)]


# --- 8. failure handling --------------------------------------------------------------------

def test_a_request_beyond_the_context_ends_vram_oom_and_the_next_request_works(worker):
    events = run_job(worker, "overflow", prompt="hi " * 300, max_tokens=400)
    assert names(events) == ["started", "error"]
    assert events[-1].data["code"] == "VRAM_OOM" and isinstance(events[-1].data["retriable"], bool)
    assert worker.health()["status"] == "unhealthy"  # M0-W-1021
    assert run_job(worker, "after-overflow", **SHORT_JOB)[-1].name == "end"
    assert worker.health()["status"] == "healthy"


def _raw_stream(worker, job_id, job):
    sock = socket.create_connection(("127.0.0.1", worker.port), timeout=10)
    body = json.dumps({"job_id": job_id, **job}).encode()
    sock.sendall(b"POST /execute HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def test_a_client_that_disconnects_stops_its_job_within_ten_tokens(worker, long_body):
    before = metric(worker, "worker_tokens_generated_total")
    sock = _raw_stream(worker, "gone", long_body)
    received = b""
    while received.count(b"event: token") < 3:
        received += sock.recv(65536)
    sock.setblocking(False)
    try:  # everything the worker sent before we hang up counts as received
        while chunk := sock.recv(65536):
            received += chunk
    except BlockingIOError:
        pass
    sock.close()
    end = worker.wait_for_event("execute_end", timeout_s=10, job_id="gone")
    assert end["outcome"] == "cancelled"
    generated = metric(worker, "worker_tokens_generated_total") - before
    assert generated - received.count(b"event: token") <= 10  # M0-W-1611
    assert worker.health()["active_job_id"] is None


# --- 10. metrics ----------------------------------------------------------------------------

def test_metrics_expose_the_basic_set_with_a_quant_kind_label(worker):
    tokens_before = metric(worker, "worker_tokens_generated_total", quant_kind="Q8_0")
    successes_before = metric(worker, "worker_requests_total", outcome="success")
    events = run_job(worker, "counted", **SHORT_JOB)
    assert metric(worker, "worker_tokens_generated_total", quant_kind="Q8_0") - tokens_before == len(events) - 2
    assert metric(worker, "worker_requests_total", outcome="success", quant_kind="Q8_0") == successes_before + 1
    assert metric(worker, "worker_inference_duration_ms_count", quant_kind="Q8_0") >= 1
    assert metric(worker, "worker_vram_bytes", quant_kind="Q8_0") == 0
    assert metric(worker, "worker_uptime_seconds", quant_kind="Q8_0") > 0
    requests.post(f"{worker.url}/execute", json={"job_id": ""}, timeout=5)
    assert metric(worker, "worker_requests_total", outcome="invalid_request") >= 1


# --- 11. the server under anything a client sends ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10)
field_values = {
    "job_id": st.text(max_size=12) | json_values,
    "prompt": st.text(max_size=40) | json_values,
    "max_tokens": st.integers(-2, 6) | st.sampled_from([2048, 2049]) | json_values,
    "temperature": st.floats(-0.5, 2.5) | json_values,
    "seed": st.integers(-1, 2**64) | json_values,
    "top_p": st.floats(-0.1, 1.1) | json_values,
    "top_k": st.integers(-1, 10**9) | json_values,
    "min_p": st.floats(-0.1, 1.1) | json_values,
    "repetition_penalty": st.floats(-0.1, 2.1) | json_values,
    "stop": st.lists(st.text(max_size=5), max_size=5) | json_values,
}
bodies = (st.fixed_dictionaries({}, optional=field_values).map(json.dumps).map(str.encode)
          | json_values.map(json.dumps).map(str.encode) | st.binary(max_size=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_body_gives_a_5xx_or_hurts_the_worker(worker, body):
    response = requests.post(f"{worker.url}/execute", data=body, stream=True, timeout=30)
    assert response.status_code in (200, 400, 409)
    if response.status_code == 200:
        events = read_events(response)
        assert_well_formed(events, events[0].data["job_id"])
    else:
        assert response.json()["code"] == "INVALID_REQUEST"
    assert worker.proc.poll() is None


def test_fifty_mixed_requests_leave_no_job_no_extra_threads_and_memory_near_baseline(worker, long_body):
    run_job(worker, "warm-up", **SHORT_JOB)
    threads_before, rss_before = worker.threads(), worker.rss_bytes()

    def one(n):
        kind, job_id = n % 5, f"mixed-{n}"
        if kind == 0:
            assert run_job(worker, job_id, **SHORT_JOB)[-1].name == "end"
        elif kind == 1:  # cancelled while running or while queued
            response = execute(worker.url, job_id=job_id, **long_body)
            requests.post(f"{worker.url}/cancel", json={"job_id": job_id}, timeout=5)
            assert read_events(response)[-1].name in ("error", "end")
        elif kind == 2:  # hangs up
            _raw_stream(worker, job_id, long_body).close()
        elif kind == 3:
            assert requests.post(f"{worker.url}/execute", json={"job_id": job_id}, timeout=10).status_code == 400
        else:
            assert read_events(execute(worker.url, job_id=job_id, prompt="hi " * 300, max_tokens=400))[-1].name \
                == "error"

    for batch in range(10):
        clients = [threading.Thread(target=one, args=(batch * 5 + k,)) for k in range(5)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
    deadline = time.monotonic() + 10
    while worker.health()["active_job_id"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    health = worker.health()
    assert health["active_job_id"] is None and health["queued_jobs"] == 0
    assert worker.threads() <= threads_before + 2  # a cancelled timeout timer may still be exiting
    assert worker.rss_bytes() < rss_before + 50 * 2**20
    assert worker.proc.poll() is None
