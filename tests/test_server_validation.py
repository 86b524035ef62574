"""POST /execute validation as a function (server.parse_execute), over generated bodies.

The boundaries one by one, over HTTP, are in test_worker_process.py; here hypothesis checks
the whole domain: nothing but InvalidRequest ever escapes, every valid body is accepted with
its values intact, and every out-of-range or non-numeric value is refused naming its field.
"""
from __future__ import annotations

import json
from functools import partial

from hypothesis import given
from hypothesis import strategies as st

from reference_worker.server import InvalidRequest, Limits, parse_execute

LIMITS = Limits(vocab_size=1000)


def count_characters(text: str) -> int:
    return len(text)


def parse(body) -> object:
    return parse_execute(json.dumps(body).encode(), LIMITS, count_characters)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)

valid_fields = {
    "max_tokens": st.integers(1, 2048),
    "temperature": st.floats(0.0, 2.0) | st.integers(0, 2),
    "seed": st.integers(0, 2**64 - 1),
    "top_p": st.floats(0.0, 1.0, exclude_min=True),
    "top_k": st.integers(0, 1000),
    "min_p": st.floats(0.0, 1.0),
    "repetition_penalty": st.floats(0.0, 2.0, exclude_min=True),
    "stop": st.lists(st.text(min_size=1, max_size=32), max_size=4),
}
valid_bodies = st.fixed_dictionaries(
    {"job_id": st.text(min_size=1, max_size=20), "prompt": st.text(min_size=1, max_size=200)},
    optional=valid_fields)
finite = partial(st.floats, allow_nan=False, allow_infinity=False)
# A value outside each numeric field's range (booleans and strings are never numbers). Non-finite
# numbers are not JSON at all: the body is refused before any field is read.
out_of_range = {
    "max_tokens": st.integers(max_value=0) | st.integers(min_value=2049) | finite() | st.booleans(),
    "temperature": finite(max_value=-1e-12) | finite(min_value=2.000001) | st.booleans() | st.text(),
    "seed": st.integers(max_value=-1) | st.integers(min_value=2**64) | finite() | st.booleans(),
    "top_p": finite(max_value=0.0) | finite(min_value=1.000001) | st.booleans(),
    "top_k": st.integers(max_value=-1) | st.integers(min_value=1001) | finite() | st.booleans(),
    "min_p": finite(max_value=-1e-12) | finite(min_value=1.000001) | st.booleans(),
    "repetition_penalty": finite(max_value=0.0) | finite(min_value=2.000001) | st.booleans(),
}


@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_either_a_request_or_invalid_request(body):
    try:
        parse_execute(body, LIMITS, count_characters)
    except InvalidRequest as exc:
        assert exc.body()["code"] == "INVALID_REQUEST" and exc.body()["retriable"] is False


@given(body=valid_bodies)
def test_every_valid_body_is_accepted_with_its_values(body):
    request = parse(body)
    assert (request.job_id, request.prompt) == (body["job_id"], body["prompt"])
    assert request.max_tokens == body.get("max_tokens", 2048)
    sampling = request.sampling
    assert sampling.seed == body.get("seed", sampling.seed) and 0 <= sampling.seed < 2**64
    assert sampling.temperature == body.get("temperature", 1.0)
    assert (sampling.top_p, sampling.top_k, sampling.min_p) == (
        body.get("top_p", 1.0), body.get("top_k", 0), body.get("min_p", 0.0))
    assert sampling.repetition_penalty == body.get("repetition_penalty", 1.0)
    assert sampling.stop == tuple(body.get("stop", ()))


@given(data=st.data(), field=st.sampled_from(sorted(out_of_range)))
def test_a_value_out_of_range_is_refused_naming_its_field(data, field):
    body = {"job_id": "j", "prompt": "p", field: data.draw(out_of_range[field])}
    try:
        parse(body)
    except InvalidRequest as exc:
        assert exc.field == field and field in exc.message
    else:
        raise AssertionError(f"{field}={body[field]!r} was accepted")
