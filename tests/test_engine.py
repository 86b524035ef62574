"""The engine API the server uses (reference_worker/README.md), on synthetic models."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_worker import engine as engine_module
from reference_worker import ops_numpy, synthetic
from reference_worker.engine import Engine, SamplingParams, TokenStep
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.gguf_file import GGUFFile
from reference_worker.llama import LlamaAdapter


@pytest.fixture(scope="module")
def engine(synthetic_model):
    return Engine.load(synthetic_model)


def run(engine, prompt="The quick brown", max_tokens=12, **params):
    gen = engine.generate(prompt, max_tokens, SamplingParams(**params))
    steps = list(gen)
    gen.close()
    return gen, steps


def test_load_reports_the_model(synthetic_model):
    progress = []
    engine = Engine.load(synthetic_model, on_progress=progress.append)
    assert progress == [0, 25, 50, 75, 100]
    assert (engine.backend, engine.resident, engine.vram_bytes_used, engine.sm) == ("numpy", False, 0, None)
    assert (engine.architecture, engine.quant_kind, engine.tokenizer_kind) == ("qwen2", "Q4_K_M", "gguf-bpe")
    assert engine.model_name == "synthetic-qwen2-mixed-seed0"
    assert (engine.vocab_size, engine.context_length) == (499, 512)
    assert engine.check_residency() is False


@pytest.mark.parametrize("arch", ["qwen2", "llama", "phi3"])
@pytest.mark.parametrize("quant", ["F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_0", "Q4_K", "Q6_K", "MXFP4"])
def test_every_weight_type_generates(synthetic_models, arch, quant):
    engine = Engine.load(synthetic_models(arch, quant))
    gen, steps = run(engine, max_tokens=4, temperature=0.0)
    assert [s.index for s in steps] == list(range(len(steps))) and gen.stop_reason in ("max_tokens", "eos")
    assert all(0 <= s.token_id < engine.vocab_size for s in steps)


def test_steps_spell_the_detokenized_output(engine):
    gen, steps = run(engine, max_tokens=20, temperature=1.0, seed=3)
    assert all(isinstance(s, TokenStep) for s in steps)
    assert "".join(s.text for s in steps) == engine.tokenizer.decode([s.token_id for s in steps], errors="ignore")
    assert gen.prompt_token_count == len(engine.tokenize("The quick brown"))
    assert gen.stop_reason == "max_tokens" and len(steps) == 20


@pytest.mark.parametrize("seed", range(3))
def test_random_weights_emit_bytes_that_are_not_utf8_and_the_steps_carry_no_replacement_character(engine, seed):
    _, steps = run(engine, max_tokens=40, temperature=1.0, seed=seed)
    emitted = b"".join(engine.tokenizer.token_bytes(s.token_id) for s in steps)
    with pytest.raises(UnicodeDecodeError):  # the case M0-W-1824 is about really happens here
        emitted.decode("utf-8")
    assert not any("\ufffd" in s.text for s in steps)
    assert "".join(s.text for s in steps) == emitted.decode("utf-8", errors="ignore")


def test_same_seed_same_tokens_and_other_seeds_differ(engine):
    tokens = {seed: [s.token_id for s in run(engine, temperature=1.0, seed=seed)[1]] for seed in range(5)}
    assert tokens[0] == [s.token_id for s in run(engine, temperature=1.0, seed=0)[1]]
    assert len({tuple(t) for t in tokens.values()}) == 5


def test_greedy_ignores_the_seed_and_a_missing_seed_is_generated(engine):
    greedy = [[s.token_id for s in run(engine, temperature=0.0, seed=seed)[1]] for seed in (1, 2)]
    assert greedy[0] == greedy[1]
    gen = engine.generate("hello", 3, SamplingParams(temperature=1.0))
    assert isinstance(gen.seed, int) and gen.seed >= 0
    drawn = [s.token_id for s in gen]  # ends the generation, which gives the KV cache back
    replay = engine.generate("hello", 3, SamplingParams(temperature=1.0, seed=gen.seed))
    assert drawn == [s.token_id for s in replay]


def test_context_limit_is_checked_before_allocating(engine):
    prompt_tokens = len(engine.tokenize("The quick brown"))
    engine.generate("The quick brown", engine.context_length - prompt_tokens).close()
    with pytest.raises(WorkerError) as caught:
        engine.generate("The quick brown", engine.context_length - prompt_tokens + 1)
    assert caught.value.code == ErrorCode.VRAM_OOM and caught.value.details["context_length"] == 512


def test_the_kv_cache_is_allocated_once_at_load_for_the_whole_context(engine):
    cache = engine.cache
    assert engine.kv_cache_positions == engine.context_length == 512
    assert cache.capacities == (512,) * 2 and cache.nbytes == 2 * 2 * 512 * 2 * 64 * 4  # layers, K+V, heads, D, fp32
    assert engine.adapter.kv_cache_bytes(engine.context_length) == cache.nbytes
    # Known before any weight is loaded (the cuda backend reserves it beside the weights).
    shape = LlamaAdapter.cache_shape(LlamaAdapter.hparams_class.from_gguf(engine.gguf))
    assert shape.nbytes(512, ops_numpy.kv_cache_bytes) == cache.nbytes
    for _ in range(3):
        run(engine, max_tokens=5, temperature=0.0)
        assert engine.cache is cache and cache.nbytes == 2 * 2 * 512 * 2 * 64 * 4  # reused, never freed


def test_phi3s_declared_window_is_not_applied_so_its_cache_is_full(synthetic_models):
    engine = Engine.load(synthetic_models("phi3", "Q8_0"))
    assert engine.gguf.metadata["phi3.attention.sliding_window"] == 255  # declared, and off as in llama.cpp
    assert engine.cache.capacities == (engine.context_length,) * engine.adapter.hp.n_layer


def test_max_positions_bounds_the_cache(synthetic_model):
    small = Engine.load(synthetic_model, max_positions=40)  # --max-tokens-in + --max-tokens-out
    assert small.kv_cache_positions == 40 and small.cache.capacities == (40, 40)
    assert Engine.load(synthetic_model, max_positions=10**6).kv_cache_positions == 512  # the context bounds it


def test_kv_cache_budget_sizes_the_cache_and_a_request_over_it_is_vram_oom(tmp_path):
    model = synthetic.build(tmp_path / "deep.gguf", dims=synthetic.Dims(n_layer=4))
    small = Engine.load(model, kv_cache_size_mb=1)  # 4 layers x K,V x 2 heads x 64 x 4 B = 4 KiB a token
    assert small.kv_cache_positions == 256 and small.cache.nbytes == 2**20  # an exact fit
    prompt_tokens = len(small.tokenize("hi"))
    run(small, "hi", 256 - prompt_tokens, temperature=0.0)
    with pytest.raises(WorkerError) as caught:
        small.generate("hi", 257 - prompt_tokens)
    e = caught.value
    assert e.code == ErrorCode.VRAM_OOM and e.details["required_bytes"] == 257 * 4096
    assert e.details["available_bytes"] == 2**20 and e.details["kv_cache_positions"] == 256
    gen, steps = run(small, "hi", 3, temperature=0.0)  # the next request is served
    assert len(steps) == 3 and small.cache.nbytes == 2**20


def test_a_kv_cache_budget_that_cannot_hold_one_position_fails_startup(synthetic_model, monkeypatch):
    # The smallest budget is 1 MiB; a backend whose position takes more (here: 600 times this
    # model's 2 KiB, as a wide model's would) cannot start with it.
    monkeypatch.setattr(ops_numpy, "kv_cache_bytes", lambda capacities, kvh, d: 600 * 2 * sum(capacities) * kvh * d * 4)
    with pytest.raises(WorkerError) as caught:
        Engine.load(synthetic_model, kv_cache_size_mb=1, device=3)
    e = caught.value
    assert e.code == ErrorCode.INSUFFICIENT_VRAM and (e.details["required_bytes"], e.details["available_bytes"]) == (
        600 * 2048, 2**20)
    assert e.details["device"] == 3 and e.details["model_path"] == str(synthetic_model)
    assert "cannot hold one position" in e.message and str(600 * 2048) in e.message
    assert Engine.load(synthetic_model, kv_cache_size_mb=2).kv_cache_positions == 1  # 2 MiB hold one


def test_the_cache_is_reused_after_a_cancel_and_an_abandoned_generation(engine):
    baseline = [s.token_id for s in run(engine, max_tokens=6, temperature=0.0)[1]]
    gen = engine.generate("The quick brown", 30, SamplingParams(temperature=0.0))
    next(iter(gen))
    gen.cancel()
    gen.close()
    with pytest.raises(WorkerError) as caught:  # one generation holds the cache at a time
        held = engine.generate("The quick brown", 2)
        engine.generate("The quick brown", 2)
    assert caught.value.code == ErrorCode.INTERNAL
    held.close()
    assert [s.token_id for s in run(engine, max_tokens=6, temperature=0.0)[1]] == baseline


def test_cancel_between_tokens(engine):
    gen = engine.generate("The quick brown", 50, SamplingParams(temperature=1.0, seed=1))
    seen = []
    for step in gen:
        seen.append(step)
        if len(seen) == 3:
            threading.Thread(target=gen.cancel).start()
            threading.Event().wait(0.05)
    assert len(seen) == 3 and gen.stop_reason == "cancelled"
    gen.close()
    gen.close()  # idempotent


def test_eos_ends_generation_without_yielding_it(engine, monkeypatch):
    eos = engine.tokenizer.eos_id
    gen = engine.generate("The quick brown", 10, SamplingParams(temperature=0.0))
    monkeypatch.setattr(engine.adapter, "forward", lambda *args, **kwargs: np.eye(engine.vocab_size)[eos])
    assert list(gen) == [] and gen.stop_reason == "eos"


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(1, 6), length=st.integers(1, 3))
def test_stop_sequences_cut_the_text_before_them(engine, cut, length):
    _, free = run(engine, max_tokens=12, temperature=1.0, seed=11)
    text = "".join(s.text for s in free)
    stop = text[cut:cut + length]
    if not stop or stop.isspace():
        return
    gen, steps = run(engine, max_tokens=12, temperature=1.0, seed=11, stop=(stop,))
    assert gen.stop_reason == "stop_sequence"
    assert "".join(s.text for s in steps) == text[:text.find(stop)]


def test_closed_generation_cannot_run(engine):
    gen = engine.generate("hi", 2, SamplingParams(temperature=0.0))
    gen.close()
    with pytest.raises(WorkerError):
        list(gen)


def test_score_matches_generation_logits(engine):
    ids = engine.tokenize("The quick brown fox")
    logits = engine.score(ids)
    assert logits.shape == (len(ids), engine.vocab_size)
    greedy = run(engine, "The quick brown fox", max_tokens=1, temperature=0.0)[1][0].token_id
    assert greedy == int(np.argmax(logits[-1]))


@pytest.mark.parametrize("path, message", [("missing.gguf", "not found"), (__file__, "not a GGUF file")])
def test_load_failures_are_model_load_failed(path, message):
    with pytest.raises(WorkerError) as caught:
        Engine.load(path)
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED and message in caught.value.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_models_load_and_generate_or_fail_cleanly(tmp_path, synthetic_model, data):
    """Byte flips anywhere in the header (hyperparameters, vocabulary, tensor shapes): the
    engine either loads and generates, or refuses with a WorkerError; never another exception."""
    content = bytearray(synthetic_model.read_bytes())
    header_end = min(t.offset for t in GGUFFile.open(synthetic_model).tensors.values())
    for _ in range(data.draw(st.integers(1, 3))):
        content[data.draw(st.integers(0, header_end - 1))] ^= 1 << data.draw(st.integers(0, 7))
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(content))
    try:
        engine = Engine.load(path)
        gen = engine.generate("The quick brown", 2, SamplingParams(temperature=1.0, seed=0))
        list(gen)
        gen.close()
    except WorkerError as e:
        assert e.code in (ErrorCode.MODEL_LOAD_FAILED, ErrorCode.INSUFFICIENT_VRAM, ErrorCode.VRAM_OOM,
                          ErrorCode.INTERNAL)


HYPERPARAMETERS = ["qwen2.block_count", "qwen2.context_length", "qwen2.embedding_length", "qwen2.feed_forward_length",
                   "qwen2.attention.head_count", "qwen2.attention.head_count_kv", "qwen2.rope.freq_base",
                   "qwen2.attention.layer_norm_rms_epsilon", "tokenizer.ggml.eos_token_id", "general.file_type"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(HYPERPARAMETERS), value=st.sampled_from([0, 1, 3, 7, 64, 2**31, 2**32 - 1, 0x7FC00000]))
def test_absurd_hyperparameters_are_refused_or_harmless(tmp_path, synthetic_model, key, value):
    content = bytearray(synthetic_model.read_bytes())
    where = content.index(key.encode()) + len(key) + 4  # the 4-byte value follows the key and its type
    content[where:where + 4] = value.to_bytes(4, "little")
    path = tmp_path / "absurd.gguf"
    path.write_bytes(bytes(content))
    try:
        engine = Engine.load(path)
        list(engine.generate("The quick brown", 2, SamplingParams(temperature=1.0, seed=0)))
    except WorkerError as e:  # a context too long for host memory: INSUFFICIENT_VRAM at startup
        assert e.code in (ErrorCode.MODEL_LOAD_FAILED, ErrorCode.INSUFFICIENT_VRAM, ErrorCode.VRAM_OOM)


def test_prefill_in_chunks_gives_the_same_tokens(engine, monkeypatch):
    prompt = "The quick brown fox jumps over the lazy dog."
    whole = [s.token_id for s in run(engine, prompt, max_tokens=6, temperature=0.0)[1]]
    monkeypatch.setattr(engine_module, "PREFILL_CHUNK", 3)
    assert [s.token_id for s in run(engine, prompt, max_tokens=6, temperature=0.0)[1]] == whole
