"""Steps for GET /health (M0-W-1320, M0-W-1364, M0-W-1012) and GET /metrics (M0-W-1350)."""
from __future__ import annotations

import os

import pytest
from gguf import LlamaFileType
from prometheus_client.parser import text_string_to_metric_families
from pytest_bdd import given, parsers, then, when

from steps.execute_steps import complete, event_data, is_int, is_number

TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": is_int,
    "number": is_number,
    "integer or null": lambda v: v is None or is_int(v),
}


#: §7.3's names for M0's quantization formats; other files by llama.cpp's names for GGUF file
#: types (gguf's LlamaFileType without its MOSTLY_/ALL_ prefix: "Q8_0", "F16", "Q6_K", ...), with
#: llama.cpp's "MXFP4_MOE" under the spec's name, "MXFP4".
M0_QUANT_KINDS = ("MXFP4", "Q4_K_M", "Q4_0")
GGUF_FILE_TYPES = frozenset(M0_QUANT_KINDS) | {
    t.name.removeprefix("MOSTLY_").removeprefix("ALL_") for t in LlamaFileType
    if t not in (LlamaFileType.GUESSED, LlamaFileType.MOSTLY_MXFP4_MOE)}


@when("the client gets /health", target_fixture="health_answer")
def get_health(worker):
    return worker.health()


@pytest.fixture
def health(health_answer) -> dict:
    assert health_answer.status_code == 200, f"/health answered HTTP {health_answer.status_code}"
    try:
        body = health_answer.json()
    except ValueError as exc:
        raise AssertionError(f"/health body is not JSON: {health_answer.text[:200]!r}") from exc
    assert isinstance(body, dict), f"/health body is not a JSON object: {body!r}"
    return body


@then("the answer is HTTP 200 with a JSON object")
def health_ok(health):
    pass  # the `health` fixture asserts it


@then("its fields have these types:")
def required_types(health, datatable):
    for field, kind in datatable[1:]:
        assert field in health, f"/health lacks the required field {field!r}: {sorted(health)}"
        assert TYPE_CHECKS[kind](health[field]), f"/health {field} = {health[field]!r} is not {kind}"


@then("its optional fields, where reported, have these types:")
def optional_types(health, datatable):
    for field, kind in datatable[1:]:
        if health.get(field) is not None:  # absent or null: not reported
            assert TYPE_CHECKS[kind](health[field]), f"/health {field} = {health[field]!r} is not {kind}"


@then(parsers.parse('its "{field}" is one of {values}'))
def one_of(health, field, values):
    allowed = [v.strip() for v in values.split(",")]
    assert health.get(field) in allowed, f"/health {field} = {health.get(field)!r}, expected one of {allowed}"


@then(parsers.parse('its "{field}" is a non-empty string'))
def non_empty_string(health, field):
    assert isinstance(health.get(field), str) and health[field], f"/health {field} = {health.get(field)!r}"


@then(parsers.parse('its "{field}" is a GGUF file type name'))
def gguf_file_type(health, field):
    value = health.get(field)
    assert value in GGUF_FILE_TYPES, (
        f"/health {field} = {value!r}: §7.3 names {', '.join(M0_QUANT_KINDS)}; other GGUF files go by llama.cpp's "
        f"file type names, spelled exactly (Q8_0, F16, Q6_K, ...)")


@then(parsers.parse("its \"{field}\" is among M0's quantization formats {values}"))
def m0_quant_kind(health, field, values):
    allowed = [v.strip() for v in values.split(",")]
    assert health.get(field) in allowed, \
        f"/health {field} = {health.get(field)!r}: a GGUF file type outside M0's matrix ({', '.join(allowed)})"


@then(parsers.parse('its "{field}" is a positive integer'))
def positive(health, field):
    assert is_int(health.get(field)) and health[field] > 0, f"/health {field} = {health.get(field)!r}"


@then(parsers.parse('its "{field}" is a positive integer or null'))
def positive_or_null(health, field):
    value = health.get(field, "missing")
    assert value is None or (is_int(value) and value > 0), f"/health {field} = {value!r}"


@then(parsers.parse('its "{field}" is a non-negative integer'))
def non_negative(health, field):
    assert is_int(health.get(field)) and health[field] >= 0, f"/health {field} = {health.get(field)!r}"


@then(parsers.parse('its "{field}" is {number:d}'))
def equals_number(health, field, number):
    assert health.get(field) == number, f"/health {field} = {health.get(field)!r}, expected {number}"


@then(parsers.parse('its "{field}" is true'))
def is_true(health, field):
    assert health.get(field) is True, f"/health {field} = {health.get(field)!r}"


@then("both started events name the same model")
def same_model_in_started(jobs, health):
    models = [event_data(next(e for e in complete(j.stream, jobs.timeout_s).events if e.name == "started"))
              .get("model") for j in jobs.jobs[-2:]]
    assert models[0] == models[1], f"started events name {models}"
    if "model" in health:
        assert models[0] == health["model"], f"started names {models[0]!r}, /health {health['model']!r}"


@then("/health, asked again, reports the same model, quant_kind, vocab_size and context_length")
def same_health(worker, health):
    again = worker.health().json()
    for field in ("model", "quant_kind", "vocab_size", "context_length"):
        assert again.get(field) == health.get(field), f"/health {field}: {health.get(field)!r} -> {again.get(field)!r}"


@given("the model file is on this machine", target_fixture="model_size")
def model_file(target) -> int:
    if not target.model or not os.path.isfile(target.model):
        pytest.skip("not verifiable: the model file is not on this machine (pass --model)")
    return os.path.getsize(target.model)


# The spec's quant_kind for a GGUF general.file_type (§ /health: "MXFP4" | "Q4_K_M" | "Q4_0"):
# llama.cpp's names without MOSTLY_/ALL_, and its MXFP4_MOE (GPT-OSS: MXFP4 experts) as MXFP4.
SPEC_QUANT_NAMES = {"MXFP4_MOE": "MXFP4"}


def file_quant_kind(path: str) -> str:
    """The spec's name for the weight format of the GGUF at path, from its general.file_type."""
    import gguf

    field = gguf.GGUFReader(path).get_field("general.file_type")
    if field is None:
        pytest.skip(f"not verifiable: {path} has no general.file_type")
    name = gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return SPEC_QUANT_NAMES.get(name, name)


@then(parsers.parse('its "quant_kind" is the spec\'s name for the model file\'s general.file_type'))
def quant_kind_of_file(health, target, model_size):
    want = file_quant_kind(target.model)
    assert health.get("quant_kind") == want, f"/health quant_kind = {health.get('quant_kind')!r}; the file stores {want}"


@then('its "tokenizer_kind" is hf-json with a tokenizer.json beside the model file, else gguf-bpe')
def tokenizer_kind_of_file(health, target, model_size):
    beside = os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(target.model)), "tokenizer.json"))
    want = "hf-json" if beside else "gguf-bpe"
    assert health.get("tokenizer_kind") == want, (
        f"/health tokenizer_kind = {health.get('tokenizer_kind')!r}, expected {want} "
        f"({'a' if beside else 'no'} tokenizer.json beside {target.model})")


@then(parsers.parse('its "{field}" is within {percent:d}% of {value:d}'))
def within_percent(health, field, percent, value):
    got = health.get(field)
    assert is_int(got) and abs(got - value) <= value * percent / 100, \
        f"/health {field} = {got!r}, outside {value} +-{percent}%"


@then(parsers.parse('its "{field}" is less than {factor:d} times the size of the model file'))
def less_than_model(health, field, factor, model_size):
    value = health.get(field)
    assert is_int(value) and value < factor * model_size, \
        f"/health {field} = {value!r} for a {model_size}-byte model: weights are not kept quantized"


@given("the worker reports a context length of at most 32768 tokens")
def small_context(target):
    context = (target.health() or {}).get("context_length")
    if not is_int(context) or context > 32768:
        pytest.skip(f"not verifiable: context_length {context!r}; a 32768-character prompt cannot overflow it")


@when("the client gets /metrics", target_fixture="metrics_answer")
def get_metrics(worker):
    return worker.get("/metrics")


@then("the answer is HTTP 200 in Prometheus text format", target_fixture="metric_names")
def prometheus_text(metrics_answer):
    assert metrics_answer.status_code == 200, f"/metrics answered HTTP {metrics_answer.status_code}"
    try:
        families = list(text_string_to_metric_families(metrics_answer.text))
    except ValueError as exc:
        raise AssertionError(f"/metrics is not Prometheus text: {exc}") from exc
    return {sample.name for family in families for sample in family.samples}


@then(parsers.parse("it has the metrics {names}"))
def has_metrics(metric_names, names):
    wanted = [n.strip() for n in names.replace(" and ", ", ").split(",")]
    missing = [n for n in wanted if not any(s == n or s.startswith(n + "_") for s in metric_names)]
    assert not missing, f"/metrics lacks {missing}"
