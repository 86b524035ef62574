"""The GPT-style adapter on the CUDA backend: gpt2_layers.cu's kernels (LayerNorm, GELU, the
position embedding add) against their NumPy twins, and test_cuda_engine.py's checks on synthetic
gpt2 models (against the NumPy engine, through prefill and the decode step captured as a CUDA
graph; VRAM loading, accounting and limits). Tolerances as in test_cuda_kernels.py."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_worker import ops_numpy, synthetic
from reference_worker.cuda import cuda_unavailable_reason
from reference_worker.engine import SamplingParams

pytestmark = pytest.mark.cuda
if (REASON := cuda_unavailable_reason()) is not None:
    pytest.skip(f"CUDA backend unavailable: {REASON}", allow_module_level=True)

import cupy as cp  # noqa: E402
# test_cuda_engine.py's tests hold for any architecture: imported here, pytest runs them again
# with this module's `model_path`, synthetic gpt2 files.
from test_cuda_engine import (  # noqa: E402, F401
    PROMPT, _decode, engines, test_a_model_too_large_for_the_budget_is_refused_with_the_numbers,
    test_chunk_size_does_not_change_what_is_loaded, test_graph_decoding_follows_the_model_greedily,
    test_a_request_over_the_cache_positions_is_vram_oom_and_the_next_one_works,
    test_seeded_sampling_repeats_and_seeds_differ, test_startup_reserves_the_kv_cache_beside_the_weights,
    test_the_decode_graph_is_recorded_once_for_every_request, test_the_kv_cache_is_allocated_at_load_counted_and_resident,
    test_teacher_forced_logits_agree_with_the_numpy_engine, test_temperature_zero_gives_identical_ids_run_after_run,
    test_vram_exhausted_by_a_request_is_vram_oom_and_the_worker_goes_on,
    test_vram_returns_to_its_baseline_after_100_requests, test_weights_stay_in_their_encoding_at_aligned_offsets,
)
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
    # 1 + tanh(z) cancels in fp32 for x below about -4: absolute errors there reach ~|x| * 3e-8.
    np.testing.assert_allclose(separate, want, rtol=2e-6, atol=1e-6)
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
    want = x + twin[start:start + n_tok]
    np.testing.assert_allclose(got.get(), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


@pytest.fixture(scope="module", params=[("mixed", True), ("Q4_K", False), ("MXFP4", True)],
                ids=["mixed-tied", "Q4_K-untied", "MXFP4-tied"])
def model_path(request, tmp_path_factory):
    quant, tied_head = request.param
    return synthetic.build_gpt2(tmp_path_factory.mktemp("gpt2") / f"{quant}.gguf", quant, seed=3, tied_head=tied_head)


def test_generation_through_the_engine_matches_the_decoder(engines):
    cuda, _ = engines
    gen = cuda.generate(PROMPT, 12, SamplingParams(temperature=0.0))
    try:
        steps = [step.token_id for step in gen]
    finally:
        gen.close()
    assert steps == _decode(cuda, cuda.tokenize(PROMPT), 12)[:len(steps)]
