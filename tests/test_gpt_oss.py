"""The gpt-oss adapter and its NumPy ops (issue 10): each op against a direct transcription of
what llama.cpp computes, the loader's refusals of broken files, and the forward pass's own
consistency (one batch = token by token through the KV cache)."""
from __future__ import annotations

import json
import subprocess

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker_process import free_port, worker_command

from reference_worker import adapter as adapter_module
from reference_worker import ops_numpy, synthetic
from reference_worker.engine import Engine
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gpt_oss import HParams
from reference_worker.gguf_file import GGUFFile
from reference_worker.ops_numpy import YaRN


@pytest.fixture(scope="module")
def gpt_oss_model(tmp_path_factory):
    return synthetic.build_gpt_oss(tmp_path_factory.mktemp("gpt-oss") / "small.gguf", tokenizer_json=True)


@pytest.fixture(scope="module")
def engine(gpt_oss_model):
    return Engine.load(gpt_oss_model)


def ggml_yarn_cos_sin(position: int, base: float, head_dim: int, yarn: YaRN) -> tuple[np.ndarray, np.ndarray]:
    """ggml-cpu's rope_yarn / ggml_rope_cache_init, step by step in float32 as it is written."""
    freq_scale = np.float32(1 / yarn.factor)

    def corr_dim(n_rot: float) -> float:
        return head_dim * np.log(yarn.n_ctx_orig / (n_rot * 2 * np.pi)) / (2 * np.log(base))

    low, high = max(0, np.floor(corr_dim(yarn.beta_fast))), min(head_dim - 1, np.ceil(corr_dim(yarn.beta_slow)))
    theta_scale = np.float32(base) ** np.float32(-2.0 / head_dim)
    theta = np.float32(position)
    cos, sin = [], []
    for i0 in range(0, head_dim, 2):
        y = (i0 // 2 - low) / max(0.001, high - low)
        ramp_mix = 1 - min(1, max(0, y))
        mixed = theta * freq_scale * (1 - ramp_mix) + theta * ramp_mix
        mscale = 1 + 0.1 * np.log(1 / freq_scale)
        cos.append(np.cos(mixed) * mscale)
        sin.append(np.sin(mixed) * mscale)
        theta = np.float32(theta * theta_scale)
    return np.array(cos), np.array(sin)


@pytest.mark.parametrize("position", [0, 1, 7, 100, 4095, 70000])
def test_yarn_rotation_is_ggmls(position):
    yarn, base, head_dim = YaRN(factor=32.0, n_ctx_orig=4096), 150000.0, 64
    x = np.random.default_rng(position).standard_normal((1, 1, head_dim)).astype(np.float32)
    cos, sin = ggml_yarn_cos_sin(position, base, head_dim, yarn)
    half = head_dim // 2
    want = np.concatenate([x[0, 0, :half] * cos - x[0, 0, half:] * sin, x[0, 0, half:] * cos + x[0, 0, :half] * sin])
    got = ops_numpy.rotate(x, np.array([position]), base, True, yarn)[0, 0]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * (1 + position / 1000))


def test_yarn_changes_the_slow_dimensions_and_scales_the_magnitude():
    freqs, magnitude = YaRN(factor=32.0, n_ctx_orig=4096).frequencies(150000.0, 64)
    plain = 150000.0 ** (-np.arange(0, 64, 2) / 64)
    assert magnitude == pytest.approx(1 + 0.1 * np.log(32))
    np.testing.assert_allclose(freqs[:8], plain[:8])  # fast pairs extrapolate: unchanged
    np.testing.assert_allclose(freqs[18:], plain[18:] / 32)  # slow pairs interpolate


def naive_attention(q, keys, values, sinks, window):
    """One query row at a time: softmax over [scores of the visible positions, sink]."""
    n, n_head, d = q.shape
    group = n_head // keys.shape[1]
    out = np.zeros((n, n_head, d))
    for t in range(n):
        for h in range(n_head):
            visible = [p for p in range(t + 1) if window == 0 or t - p < window]
            scores = np.array([q[t, h] @ keys[p, h // group] / np.sqrt(d) for p in visible], np.float64)
            logits = np.append(scores, -np.inf if sinks is None else sinks[h])
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            out[t, h] = probs[:-1] @ values[visible, h // group]
    return out.reshape(n, -1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), window=st.sampled_from([0, 1, 3, 8]), with_sinks=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_attention_with_sinks_and_window_is_the_naive_softmax(n, window, with_sinks, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((n, h, 16)).astype(np.float32) for h in (4, 2, 2))
    sinks = rng.standard_normal(4).astype(np.float32) * 2 if with_sinks else None
    cache = ops_numpy.new_kv_cache(n, (n,), 2, 16)
    got = ops_numpy.attention(q, k, v, cache, 0, 0, sinks, window)
    np.testing.assert_allclose(got, naive_attention(q, k, v, sinks, window), rtol=1e-4, atol=1e-5)


def test_swiglu_oai_clamps_and_shifts_as_ggml():
    gate = np.array([-10.0, -1.0, 0.0, 1.0, 7.0, 12.0], np.float32)
    up = np.array([-12.0, -1.0, 0.5, 1.0, 3.0, 9.0], np.float32)
    g = np.minimum(gate, 7.0)
    want = g / (1 + np.exp(-1.702 * g)) * (np.clip(up, -7, 7) + 1)
    np.testing.assert_allclose(ops_numpy.swiglu_oai(gate, up), want, rtol=1e-6, atol=1e-5)


def test_router_takes_the_top_k_and_softmaxes_only_those():
    x = np.eye(3, dtype=np.float32)
    w = np.array([[1, 0, 0], [3, 0, 2], [2, 1, 0], [0, 5, 1]], np.float32)  # 4 experts
    ids, weights = ops_numpy.route(x, w, np.zeros(4, np.float32), 2)
    assert ids.tolist() == [[1, 2], [3, 2], [1, 3]]
    np.testing.assert_allclose(weights[0], np.exp([3, 2]) / np.exp([3, 2]).sum(), rtol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-6)


def test_expert_ffn_is_the_weighted_sum_of_the_routed_experts(gpt_oss_model):
    model = GGUFFile.open(gpt_oss_model)
    tensors = [model.tensors[f"blk.0.ffn_{p}_exps.{w}"] for w in ("weight", "bias") for p in ("gate", "up", "down")]
    experts = ops_numpy.load_experts(*tensors)
    dense = [gguf.quants.dequantize(t.raw, t.qtype).reshape(t.shape) for t in tensors[:3]]  # gguf as oracle
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 192)).astype(np.float32)
    ids = rng.integers(0, 4, size=(5, 2)).astype(np.int32)
    weights = rng.random((5, 2)).astype(np.float32)
    residual = rng.standard_normal((5, 192)).astype(np.float32)
    want = residual.astype(np.float64).copy()
    for t in range(5):
        for j, e in enumerate(ids[t]):
            act = ops_numpy.swiglu_oai(dense[0][e] @ x[t] + experts.gate_bias[e], dense[1][e] @ x[t] + experts.up_bias[e])
            want[t] += weights[t, j] * (dense[2][e] @ act + experts.down_bias[e])
    np.testing.assert_allclose(ops_numpy.expert_ffn(x, ids, weights, experts, residual), want, rtol=1e-4, atol=1e-4)


def test_hparams_follow_llama_cpps_reading(gpt_oss_model):
    hp = HParams.from_gguf(GGUFFile.open(gpt_oss_model))
    assert (hp.n_head * hp.head_dim, hp.n_embd) == (256, 192)  # the attention is wider than the model
    assert hp.sliding == (True, False, True)  # llama.cpp's pattern 2: even layers slide
    assert hp.yarn == YaRN(factor=32.0, n_ctx_orig=4096) and (hp.n_expert, hp.n_expert_used) == (4, 2)


def test_engine_reports_the_architecture_mxfp4_and_the_tokenizer_json_beside_it(engine):
    assert (engine.architecture, engine.quant_kind, engine.tokenizer_kind) == ("gpt-oss", "MXFP4", "hf-json")
    assert engine.context_length == 512 and engine.vocab_size == engine.tokenizer.vocab_size


def test_the_tokenizer_json_encodes_as_the_ggufs_own_vocabulary(engine, gpt_oss_model):
    from reference_worker.tokenizer import Tokenizer

    own = Tokenizer.from_gguf(GGUFFile.open(gpt_oss_model))
    text = "<|start|>user<|message|>The quick brown fox, 1234 ü 言語<|end|>"
    assert engine.tokenize(text) == own.encode(text, add_special=True)
    assert own.decode(own.encode(text)) == text


def logits_through(adapter, ids: list[int], prompt_len: int, cache, chunk: int) -> np.ndarray:
    """The logits of every step: ids[:prompt_len] prefilled in chunks, the rest one at a time."""
    steps = [adapter.forward(ids[start:min(start + chunk, prompt_len)], start, cache)
             for start in range(0, prompt_len, chunk)]
    steps += [adapter.forward(ids[i:i + 1], i, cache) for i in range(prompt_len, len(ids))]
    return np.stack(steps)


def full_cache(adapter, n_ctx: int):
    """What every layer held before the ring: all n_ctx positions (the old path)."""
    hp = adapter.hp
    return adapter.ops.new_kv_cache(n_ctx, (n_ctx,) * hp.n_layer, hp.n_head_kv, hp.head_dim)


# (prefill chunk, prompt tokens, all tokens): a small chunk wraps the ring many times; the real
# one (256) wraps it once, 264 positions after the start.
RING_RUNS = [(4, 10, 70), (adapter_module.PREFILL_CHUNK, 300, 340)]


def ring_and_full_logits(adapter, chunk: int, prompt_len: int, n: int, monkeypatch) -> tuple[np.ndarray, ...]:
    monkeypatch.setattr(adapter_module, "PREFILL_CHUNK", chunk)
    ring = adapter.new_cache(n)
    window = adapter.hp.sliding_window
    assert ring.capacities == tuple(window + chunk if sliding else n for sliding in adapter.hp.sliding)
    assert max(ring.capacities) == n and min(ring.capacities) < n - window  # it wraps past the window
    ids = np.random.default_rng(chunk).integers(0, adapter.hp.n_vocab, n).tolist()
    return (logits_through(adapter, ids, prompt_len, ring, chunk),
            logits_through(adapter, ids, prompt_len, full_cache(adapter, n), chunk))


@pytest.mark.parametrize("chunk, prompt_len, n", RING_RUNS)
def test_the_window_layers_ring_gives_the_logits_of_the_full_cache(engine, monkeypatch, chunk, prompt_len, n):
    ring, full = ring_and_full_logits(engine.adapter, chunk, prompt_len, n, monkeypatch)
    np.testing.assert_allclose(ring, full, rtol=1e-5, atol=1e-5)


def test_the_engine_cache_holds_the_window_and_a_chunk_on_sliding_layers(engine):
    hp = engine.adapter.hp
    assert hp.sliding == (True, False, True) and hp.sliding_window == 8
    assert engine.cache.capacities == (8 + 256, 512, 8 + 256) and engine.kv_cache_positions == 512
    assert engine.cache.nbytes == 2 * (264 + 512 + 264) * 2 * 64 * 4


def test_a_chunk_longer_than_the_ring_allows_is_refused(engine, monkeypatch):
    monkeypatch.setattr(adapter_module, "PREFILL_CHUNK", 4)
    cache, adapter = engine.adapter.new_cache(64), engine.adapter  # sliding layers: 8 + 4 slots
    ids = list(range(1, 40))
    adapter.forward(ids[:20], 0, full_cache(adapter, 64))  # (a full cache takes any chunk)
    for start in range(0, 20, 4):
        adapter.forward(ids[start:start + 4], start, cache)
    adapter.forward(ids[20:25], 20, cache)  # 5 new + the 7 before the first: 12 slots, a fit
    with pytest.raises(WorkerError) as caught:
        adapter.forward(ids[25:31], 25, cache)  # 6 new + 7: 13
    assert caught.value.code == ErrorCode.VRAM_OOM and "holds 12" in caught.value.message


def test_the_real_size_cache_is_in_gpt_oss_20b_envelope():
    """GPT-OSS-20B: 12 full layers of 131,072 positions and 12 rings of 128 + 256, fp16 on the GPU;
    with the 12.14e9 bytes of weights, /health's vram_bytes_used is about 15.4e9 (M0-W-1823)."""
    real = synthetic.GPT_OSS_20B
    windows = tuple(real.sliding_window if il % 2 == 0 else 0 for il in range(real.n_layer))
    shape = adapter_module.CacheShape(windows, real.n_head_kv, real.head_dim)
    fp16 = shape.nbytes(real.n_ctx, ops_numpy.kv_cache_bytes) // 2  # the cuda cache: half the fp32 twin's
    assert fp16 == 12 * (131072 + 384) * 8 * 64 * 2 * 2 == 3_230_662_656
    assert 0.8 * 16e9 <= 12.14e9 + fp16 <= 1.2 * 16e9


def test_token_by_token_through_the_cache_equals_one_batch(engine):
    ids = engine.tokenize("The quick brown fox jumps over the lazy dog, and a GPU computes many small things")
    assert len(ids) > 2 * engine.adapter.hp.sliding_window  # the window has slid
    batch = engine.score(ids)
    cache = engine.adapter.new_cache(len(ids))
    stepwise = np.stack([engine.adapter.forward([t], i, cache) for i, t in enumerate(ids)])
    np.testing.assert_allclose(stepwise, batch, rtol=1e-4, atol=1e-4)


def test_the_window_is_applied(engine):
    """The same weights with every layer global give other logits once the window has slid."""
    ids = engine.tokenize("The quick brown fox jumps over the lazy dog, and a GPU computes many small things")
    hp, base = engine.adapter.hp, engine.score(ids)
    for layer in engine.adapter.layers:
        layer.sliding_window = 0
    try:
        assert np.abs(engine.score(ids) - base)[hp.sliding_window:].max() > 1e-2
    finally:
        for layer, sliding in zip(engine.adapter.layers, hp.sliding):
            layer.sliding_window = hp.sliding_window if sliding else 0
    np.testing.assert_array_equal(engine.score(ids), base)


BROKEN = {
    "missing expert tensor": ({"drop": ("blk.1.ffn_up_exps.weight",)}, "blk.1.ffn_up_exps.weight"),
    "misshaped expert tensor": ({"reshape": {"blk.0.ffn_down_exps.weight": (4, 192, 96)}}, "blk.0.ffn_down_exps"),
    "missing expert bias": ({"drop": ("blk.2.ffn_gate_exps.bias",)}, "blk.2.ffn_gate_exps.bias"),
    "expert count the tensors do not have": ({"metadata": {"expert_count": 8}}, "blk.0.ffn_gate_exps.weight"),
    "more experts used than exist": ({"metadata": {"expert_used_count": 5}}, "expert_used_count 5"),
    "no experts": ({"metadata": {"expert_count": 0}}, "out of range"),
    "missing sinks": ({"drop": ("blk.0.attn_sinks.weight",)}, "blk.0.attn_sinks.weight"),
    "no heads": ({"metadata": {"attention.head_count": 0}}, "out of range"),
    "no original context for YaRN": ({"metadata": {"rope.scaling.original_context_length": 0}},
                                     "original_context_length"),
}


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_broken_files_are_refused_with_a_message_naming_the_problem(broken, tmp_path):
    options, named = BROKEN[broken]
    path = synthetic.build_gpt_oss(tmp_path / "broken.gguf", **options)
    with pytest.raises(WorkerError) as caught:
        Engine.load(path)
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED and named in caught.value.message


GPT_OSS_COUNTS = ["block_count", "context_length", "embedding_length", "attention.head_count",
                  "attention.head_count_kv", "attention.key_length", "attention.value_length", "expert_count",
                  "expert_used_count", "expert_feed_forward_length", "attention.sliding_window",
                  "rope.scaling.original_context_length"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(GPT_OSS_COUNTS), value=st.sampled_from([0, 1, 3, 7, 64, 2**31, 2**32 - 1]))
def test_absurd_counts_are_refused_or_harmless(tmp_path, key, value):
    path = synthetic.build_gpt_oss(tmp_path / "absurd.gguf", metadata={key: value})
    try:
        engine = Engine.load(path)
        list(engine.generate("The quick brown", 2))
    except WorkerError as e:  # a context too long for host memory: INSUFFICIENT_VRAM at startup
        assert e.code in (ErrorCode.MODEL_LOAD_FAILED, ErrorCode.INSUFFICIENT_VRAM, ErrorCode.VRAM_OOM), e


def test_worker_exits_1_with_model_load_failed_and_no_traceback(tmp_path):
    path = synthetic.build_gpt_oss(tmp_path / "broken.gguf", metadata={"expert_count": 3})
    result = subprocess.run(worker_command("--worker-id", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "--model", str(path),
                                           "--gpu-device", "0", "--port", str(free_port()), "--backend", "numpy"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = json.loads(result.stdout.splitlines()[-1])
    assert error["code"] == "MODEL_LOAD_FAILED" and "ffn_gate_exps" in error["message"]
