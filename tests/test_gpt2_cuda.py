"""The GPT-style adapter on the CUDA backend: gpt2_layers.cu's kernels (LayerNorm, GELU, the
position embedding add) against their NumPy twins, and synthetic gpt2 models against the NumPy
engine, through prefill and the decode step captured as a CUDA graph. Tolerances as in
test_cuda_kernels.py and test_cuda_engine.py."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_worker import ops_numpy, synthetic
from reference_worker.cuda import cuda_unavailable_reason
from reference_worker.engine import Engine, SamplingParams

pytestmark = pytest.mark.cuda
if (REASON := cuda_unavailable_reason()) is not None:
    pytest.skip(f"CUDA backend unavailable: {REASON}", allow_module_level=True)

import cupy as cp  # noqa: E402
from test_cuda_engine import PROMPT, _decode  # noqa: E402
from test_cuda_kernels import GPU_SETTINGS, WEIGHT_TYPES, cols_for, random_weight, rel_err  # noqa: E402

from reference_worker.cuda import kernels  # noqa: E402


@GPU_SETTINGS
@given(n_tok=st.sampled_from([1, 5, 70]), n=st.sampled_from([64, 256, 768, 1600]), offset=st.floats(-50, 50),
       seed=st.integers(0, 1000))
def test_layernorm_matches_twin(n_tok, n, offset, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_tok, n)) * 3 + offset).astype(np.float32)
    w, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    dx = cp.asarray(x)
    got = kernels.layernorm(dx, cp.asarray(w), cp.asarray(b), 1e-5, cp.full_like(dx, np.nan))
    want = ops_numpy.layernorm(x.astype(np.float64), w, b, 1e-5)
    assert rel_err(got.get(), want) < 1e-5


def test_gelu_matches_twin_and_works_in_place():
    x = np.concatenate([np.linspace(-12, 12, 4001), [-1e4, -50, 50, 1e4]]).astype(np.float32)
    want = ops_numpy.gelu(x.astype(np.float64))
    dx = cp.asarray(x)
    separate = kernels.gelu(dx, cp.full_like(dx, np.nan)).get()
    np.testing.assert_allclose(separate, want, rtol=2e-6, atol=2e-7)
    assert np.array_equal(kernels.gelu(dx, dx).get(), separate)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
@GPU_SETTINGS
@given(rows=st.integers(8, 80), units=st.integers(1, 40), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_add_positions_adds_the_decoded_rows_of_the_positions(qtype, rows, units, data, seed):
    table, twin = random_weight(qtype, rows, cols_for(qtype, units), seed)
    n_tok = data.draw(st.integers(1, rows))
    start = data.draw(st.integers(0, rows - n_tok))
    x = np.random.default_rng(seed).standard_normal((n_tok, table.cols)).astype(np.float32)
    dx = cp.asarray(x)
    got = kernels.add_positions(table, dx, cp.asarray([start], np.int32), dx)  # in place, as CudaOps runs it
    np.testing.assert_allclose(got.get(), x + twin[start:start + n_tok], rtol=1e-6, atol=1e-6 * np.abs(twin).max())


@pytest.fixture(scope="module", params=[("mixed", True), ("Q4_K", False), ("MXFP4", True)],
                ids=["mixed-tied", "Q4_K-untied", "MXFP4-tied"])
def engines(request, tmp_path_factory):
    quant, tied_head = request.param
    path = synthetic.build_gpt2(tmp_path_factory.mktemp("gpt2") / f"{quant}.gguf", quant, seed=3, tied_head=tied_head)
    cuda, host = Engine.load(path, backend="cuda"), Engine.load(path, backend="numpy")
    yield cuda, host
    cuda.close()


def test_weights_stay_in_their_file_encoding_in_vram(engines):
    cuda, _ = engines
    arena = cuda.ops.arena
    for name, tensor in cuda.gguf.tensors.items():  # M0-W-1201: nothing decoded on the way in
        place = arena.placements[name]
        assert np.array_equal(arena.base[place.offset:place.offset + place.n_bytes].get(), tensor.raw.reshape(-1))
    assert cuda.resident and cuda.check_residency()


def test_teacher_forced_logits_agree_with_the_numpy_engine(engines):
    cuda, host = engines
    ids = cuda.tokenize(PROMPT * 3)
    got, want = cuda.score(ids), host.score(ids)
    err = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert err.max() < 2e-2  # fp16 KV cache against the twin's fp32 one
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05 * np.abs(want).max(axis=1)
    assert clear.sum() > len(ids) // 2 and np.array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


def test_graph_decoding_follows_the_model_greedily_and_repeats(engines):
    """The decode step recorded as a CUDA graph reads positions from the device state: each
    token it picks is the NumPy model's top-1 at the position it was decoded at."""
    cuda, host = engines
    ids = cuda.tokenize(PROMPT)
    out = _decode(cuda, ids, 40)
    logits = host.score(ids + out)[len(ids) - 1:-1]
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05 * np.abs(logits).max(axis=1)
    assert clear.sum() > len(out) // 2 and np.array_equal(np.asarray(out)[clear], logits.argmax(1)[clear])
    assert _decode(cuda, ids, 40) == out  # M0-W-1826


def test_generation_through_the_engine_matches_the_decoder(engines):
    cuda, _ = engines
    gen = cuda.generate(PROMPT, 12, SamplingParams(temperature=0.0))
    try:
        steps = [step.token_id for step in gen]
    finally:
        gen.close()
    assert steps == _decode(cuda, cuda.tokenize(PROMPT), 12)[:len(steps)]
