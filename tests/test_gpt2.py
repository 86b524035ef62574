"""The GPT-style adapter (M0-W-1215) on the NumPy backend: its ops (LayerNorm, GELU, position
embeddings: M0-W-1432/1433/1434), synthetic gpt2 models end to end, the "gpt" alias, and files
that must be refused. Agreement with llama.cpp is tests/test_gpt2_agreement.py."""
from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from worker_process import free_port, worker_command

from reference_worker import engine as engine_module
from reference_worker import ops_numpy, synthetic
from reference_worker.engine import Engine, SamplingParams
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile

rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=64),
                  elements=st.floats(-1e3, 1e3, width=32))


@pytest.fixture(scope="module")
def gpt2_models(tmp_path_factory):
    """`build(quant="Q8_0", arch="gpt2", tied_head=True) -> Path`, each file made once."""
    folder, cache = tmp_path_factory.mktemp("gpt2"), {}

    def build(quant: str = "Q8_0", arch: str = "gpt2", tied_head: bool = True):
        key = (quant, arch, tied_head)
        if key not in cache:
            cache[key] = synthetic.build_gpt2(folder / f"{arch}-{quant}-{tied_head}.gguf", quant, seed=5, arch=arch,
                                              tied_head=tied_head)
        return cache[key]

    return build


@pytest.fixture(scope="module")
def engine(gpt2_models):
    return Engine.load(gpt2_models("mixed"))


# -- the ops -----------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(x=rows, shift=st.floats(-100, 100), scale=st.floats(0.5, 4))
def test_layernorm_gives_zero_mean_unit_variance_whatever_the_row_offset_and_scale(x, shift, scale):
    x = x.astype(np.float64)
    x[:, 0] = x[:, 1:].max(axis=1) + 1.0  # no constant rows: their variance is 0 and eps decides
    n = x.shape[1]
    ones, zeros = np.ones(n), np.zeros(n)
    y = ops_numpy.layernorm(x, ones, zeros, 1e-12)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(y.var(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(ops_numpy.layernorm(x * scale + shift, ones, zeros, 1e-12), y, atol=1e-6)


def test_layernorm_applies_weight_then_bias_per_column():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 8)), rng.standard_normal(8), rng.standard_normal(8)
    plain = ops_numpy.layernorm(x, np.ones(8), np.zeros(8), 1e-5)
    np.testing.assert_allclose(ops_numpy.layernorm(x, w, b, 1e-5), plain * w + b)
    # eps sits under the square root: a constant row normalises to 0, not to NaN.
    assert np.array_equal(ops_numpy.layernorm(np.full((1, 8), 3.0), w, b, 1e-5), b[None, :])


@settings(max_examples=50, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(-30, 30)))
def test_gelu_is_the_tanh_approximation_of_x_times_the_normal_cdf(x):
    exact = x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    # The tanh approximation is within 4.8e-4 of x * Phi(x) (measured on a 1e-4 grid over
    # [-30, 30]); the sigmoid one, x * sigmoid(1.702 x), is 2e-2 off and would fail.
    assert np.abs(ops_numpy.gelu(x) - exact).max() < 5e-4


def test_gelu_in_float32_stays_finite_at_the_extremes():
    x = np.array([-100, -10, 0, 10, 100], np.float32)
    y = ops_numpy.gelu(x)
    assert np.isfinite(y).all() and abs(y[1]) < 1e-20 and list(y[2:]) == [0, 10, 100]


def test_add_positions_adds_the_rows_of_the_positions_asked_for(gpt2_models):
    table = GGUFFile.open(gpt2_models()).tensors["position_embd.weight"]
    rows_of = ops_numpy.load_embedding(table)
    x = np.random.default_rng(1).standard_normal((5, table.shape[1])).astype(np.float32)
    decoded = ops_numpy.load_matrix(table)
    np.testing.assert_array_equal(ops_numpy.add_positions(x, rows_of, 7), x + decoded[7:12])


# -- the model ---------------------------------------------------------------------------------
def test_a_synthetic_gpt2_file_is_shaped_like_llama_cpp_converted_gpt2(gpt2_models):
    gguf = GGUFFile.open(gpt2_models())
    assert gguf.architecture == "gpt2" and gguf.metadata["tokenizer.ggml.pre"] == "gpt-2"
    assert "gpt2.attention.layer_norm_epsilon" in gguf.metadata and "gpt2.attention.head_count_kv" not in gguf.metadata
    assert {"token_embd.weight", "position_embd.weight", "output_norm.bias", "blk.1.attn_qkv.bias",
            "blk.1.ffn_down.bias"} <= set(gguf.tensors) and "output.weight" not in gguf.tensors
    assert gguf.tensors["position_embd.weight"].qtype == Q.F32
    assert "output.weight" in GGUFFile.open(gpt2_models(tied_head=False)).tensors


def test_load_reports_a_gpt2_model(engine):
    assert (engine.architecture, engine.quant_kind, engine.tokenizer_kind) == ("gpt2", "Q4_K_M", "gguf-bpe")
    assert (engine.vocab_size, engine.context_length) == (497, 512)
    assert engine.tokenizer.eos_ids == {496}


@pytest.mark.parametrize("quant", ["F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_0", "Q4_K", "Q6_K", "MXFP4"])
@pytest.mark.parametrize("tied_head", [True, False], ids=["tied", "untied"])
def test_every_weight_type_generates(gpt2_models, quant, tied_head):
    engine = Engine.load(gpt2_models(quant, tied_head=tied_head))
    gen = engine.generate("The quick brown", 4, SamplingParams(temperature=0.0))
    steps = list(gen)
    assert [s.index for s in steps] == list(range(len(steps))) and gen.stop_reason in ("max_tokens", "eos")
    assert all(0 <= s.token_id < engine.vocab_size for s in steps)


def test_the_cache_gives_the_logits_of_one_full_pass(engine):
    """Token by token through the KV cache, as decoding runs, equals one teacher-forced pass."""
    ids = engine.tokenize("The quick brown fox jumps over the lazy dog.")
    whole = engine.score(ids)
    cache = engine.adapter.new_cache(len(ids))
    stepwise = np.stack([engine.adapter.forward([token], p, cache) for p, token in enumerate(ids)])
    np.testing.assert_allclose(stepwise, whole, rtol=1e-4, atol=1e-4)


def test_positions_matter(engine):
    """The same tokens at other positions give other logits: the position table is used."""
    ids = engine.tokenize("The quick brown fox")
    first = engine.adapter.forward(ids, 0, engine.adapter.new_cache(64))
    cache = engine.adapter.new_cache(64)
    engine.adapter.forward(ids, 0, cache)
    again = engine.adapter.forward(ids, len(ids), cache)
    assert np.abs(first - again).max() > 1e-2


def test_greedy_generation_follows_the_scored_logits(engine):
    gen = engine.generate("The quick brown fox", 8, SamplingParams(temperature=0.0))
    prompt = engine.tokenize("The quick brown fox")
    out = [s.token_id for s in gen]
    logits = engine.score(prompt + out)
    assert out == list(np.argmax(logits[len(prompt) - 1:-1], axis=1))


def test_prefill_in_chunks_gives_the_same_tokens(engine, monkeypatch):
    prompt = "The quick brown fox jumps over the lazy dog."
    whole = [s.token_id for s in engine.generate(prompt, 6, SamplingParams(temperature=0.0))]
    monkeypatch.setattr(engine_module, "PREFILL_CHUNK", 3)
    assert [s.token_id for s in engine.generate(prompt, 6, SamplingParams(temperature=0.0))] == whole


def test_the_spec_alias_gpt_loads_the_same_model(gpt2_models):
    gpt, gpt2 = Engine.load(gpt2_models(arch="gpt")), Engine.load(gpt2_models())
    assert gpt.architecture == "gpt" and "gpt.block_count" in gpt.gguf.metadata
    ids = gpt2.tokenize("def forward(self, tokens):")
    np.testing.assert_array_equal(gpt.score(ids), gpt2.score(ids))


# -- files that must be refused ----------------------------------------------------------------
def renamed_tensor(model, tmp_path):
    """The model with its position table renamed (same length), so the file lacks one."""
    path = tmp_path / "no-positions.gguf"
    path.write_bytes(model.read_bytes().replace(b"position_embd.weight", b"position_embx.weight"))
    return path


def longer_context(model, tmp_path):
    """The model declaring 1024 positions of context over its 512-row position table."""
    content = bytearray(model.read_bytes())
    where = content.index(b"gpt2.context_length") + len(b"gpt2.context_length") + 4  # after the value type
    assert int.from_bytes(content[where:where + 4], "little") == 512
    content[where:where + 4] = (1024).to_bytes(4, "little")
    path = tmp_path / "short-table.gguf"
    path.write_bytes(bytes(content))
    return path


BAD_FILES = [
    (renamed_tensor, "tensor 'position_embd.weight' (the learned position embeddings a gpt2 model needs) is missing"),
    (longer_context, "the position table has 512 rows, fewer than the context length 1024 the file declares"),
]


@pytest.mark.parametrize("make, message", BAD_FILES, ids=["missing-position-table", "table-shorter-than-context"])
def test_a_bad_gpt2_file_is_model_load_failed_with_a_clear_message(gpt2_models, tmp_path, make, message):
    with pytest.raises(WorkerError) as caught:
        Engine.load(make(gpt2_models(), tmp_path))
    assert caught.value.code is ErrorCode.MODEL_LOAD_FAILED and message in caught.value.message


@pytest.mark.parametrize("make, message", BAD_FILES, ids=["missing-position-table", "table-shorter-than-context"])
def test_the_worker_refuses_a_bad_gpt2_file_with_exit_1_and_no_traceback(gpt2_models, tmp_path, make, message):
    bad = make(gpt2_models(), tmp_path)
    result = subprocess.run(worker_command("--worker-id", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "--model", str(bad),
                                           "--gpu-device", "0", "--port", str(free_port()), "--backend", "numpy"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [json.loads(line) for line in result.stdout.splitlines()][-1]
    assert error["event"] == "error" and error["code"] == "MODEL_LOAD_FAILED" and message in error["message"]
