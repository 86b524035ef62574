"""attention.cu's prefill and decode kernels and layers.cu's kv_store, run on the CPU
(tests/cuda_on_cpu: each CUDA thread a fiber), against ops_numpy.attention over a cache of
every position: where there is no GPU this still checks their indexing, above all the ring of a
sliding-window layer (position p at slot p % capacity, the other slots NaN and never read).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cpu_emulation
from reference_worker import ops_numpy
from reference_worker.ops_numpy import YaRN

pytestmark = pytest.mark.slow
N_KV, GROUP, HEAD_DIM, BASE = 2, 2, 64, 150000.0
YARN = YaRN(factor=32.0, n_ctx_orig=4096)
FP16_NAN = 0x7E00


@pytest.fixture(scope="module")
def attention_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "attention_main")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("attention_io")


def run_kernels(binary: Path, workdir: Path, decode: bool, q, k_prev, v_prev, k_new, v_new, start: int,
                capacity: int, window: int, sinks, yarn: bool,
                split_blocks: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple | None]:
    """(out, K cache, V cache as fp16, and for a decode (the replay's out, the separate merge's
    out, the ticket counters)) from attention_main (its header says what it runs); split_blocks
    stands for kernels.ATTN_SPLIT_BLOCKS."""
    n_tok, n_head, head_dim = q.shape
    freqs, magnitude = YARN.frequencies(BASE, head_dim) if yarn else (None, 1.0)
    header = np.array([int(decode), n_tok, n_head, N_KV, head_dim, capacity, start, window, len(k_prev),
                       sinks is not None, True, yarn, split_blocks], np.int32)
    parts = [header, np.array([1 / np.sqrt(head_dim), BASE, magnitude], np.float32), q, k_prev, v_prev, k_new, v_new]
    parts += [a for a in (sinks, freqs) if a is not None]
    (workdir / "in.bin").write_bytes(b"".join(np.ascontiguousarray(a, np.float32 if a.dtype != np.int32 else None)
                                              .tobytes() for a in parts))
    subprocess.run([str(binary), str(workdir / "in.bin"), str(workdir / "out.bin")], check=True, timeout=120)
    raw = (workdir / "out.bin").read_bytes()
    floats = q.size * (3 if decode else 1) + (n_head if decode else 0)
    outs = np.frombuffer(raw, np.float32, floats)
    caches = np.frombuffer(raw, np.uint16, offset=floats * 4).reshape(2, N_KV, capacity, head_dim)
    out = outs[:q.size].reshape(q.shape)
    extras = None
    if decode:
        extras = (outs[q.size:2 * q.size].reshape(q.shape), outs[2 * q.size:3 * q.size].reshape(q.shape),
                  outs[3 * q.size:].view(np.uint32))
    return out, caches[0], caches[1], extras


def fp16(rng, *shape) -> np.ndarray:
    """Random values that the fp16 cache holds exactly, so the twin sees what the kernels read."""
    return rng.standard_normal(shape).astype(np.float16).astype(np.float32)


def twin(q, k_all, v_all, start: int, sinks, window: int) -> np.ndarray:
    """ops_numpy.attention for q at start.. over a cache of every position 0..start+n-1."""
    n = len(q)
    cache = ops_numpy.KVCache(start + n, (start + n,), N_KV, q.shape[2])
    if start:
        ops_numpy.attention(np.zeros((start, *q.shape[1:]), np.float32), k_all[:start], v_all[:start], cache, 0, 0)
    return ops_numpy.attention(q, k_all[start:], v_all[start:], cache, 0, start, sinks, window)


def held_slots(capacity: int, first: int, end: int) -> np.ndarray:
    return np.arange(first, end) % capacity


@settings(max_examples=12, deadline=None)
@given(start=st.integers(0, 60), n=st.integers(1, 12), window=st.sampled_from([0, 1, 8]),
       ring_extra=st.integers(0, 5), with_sinks=st.booleans(), seed=st.integers(0, 1000))
def test_prefill_over_a_ring_is_the_twins_attention(attention_main, workdir, start, n, window, ring_extra,
                                                   with_sinks, seed):
    rng = np.random.default_rng(seed)
    # A window layer's ring holds the window and the chunk (here n + ring_extra); a full layer all.
    capacity = window + n + ring_extra if window else start + n + ring_extra
    first = max(0, start - window + 1) if window else 0
    q = fp16(rng, n, N_KV * GROUP, HEAD_DIM)
    k_all, v_all = fp16(rng, start + n, N_KV, HEAD_DIM), fp16(rng, start + n, N_KV, HEAD_DIM)
    sinks = (rng.standard_normal(N_KV * GROUP) * 3).astype(np.float32) if with_sinks else None
    out, k_cache, v_cache, _ = run_kernels(attention_main, workdir, False, q, k_all[first:start], v_all[first:start],
                                        k_all[start:], v_all[start:], start, capacity, window, sinks, yarn=False)
    want = twin(q, k_all, v_all, start, sinks, window).reshape(q.shape)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    slots = held_slots(capacity, first, start + n)
    assert np.array_equal(k_cache[:, slots].view(np.float16).transpose(1, 0, 2), k_all[first:].astype(np.float16))
    unwritten = np.setdiff1d(np.arange(capacity), slots)
    assert (k_cache[:, unwritten] == FP16_NAN).all()


@settings(max_examples=12, deadline=None)
@given(start=st.integers(0, 400), window=st.sampled_from([0, 1, 8, 70, 200]), ring_extra=st.integers(0, 80),
       blocks_per_head=st.sampled_from([1, 2, 3, 256]), with_sinks=st.booleans(), yarn=st.booleans(),
       seed=st.integers(0, 1000))
@example(start=300, window=0, ring_extra=20, blocks_per_head=2, with_sinks=True, yarn=True, seed=1)  # 5 chunks, 2 blocks
@example(start=350, window=200, ring_extra=7, blocks_per_head=1, with_sinks=False, yarn=False, seed=2)  # a ring, 1 block
def test_decode_over_a_ring_stores_and_attends_as_the_twin(attention_main, workdir, start, window, ring_extra,
                                                           blocks_per_head, with_sinks, yarn, seed):
    """A chunk of 64 positions per block, or (fewer blocks than chunks) several chunks a block; the
    last block of a head to finish merges the head's blocks: bit for bit what a separate merge
    launch over the same block states gives (the attention_combine kernel it replaced), with the
    ticket counters back at 0, so that a second launch (a graph replay) gives the same bits."""
    rng = np.random.default_rng(seed)
    capacity = window + ring_extra if window else start + 1 + ring_extra
    first = max(0, start - window + 1) if window else 0
    q = fp16(rng, 1, N_KV * GROUP, HEAD_DIM)
    k_all, v_all = fp16(rng, start + 1, N_KV, HEAD_DIM), fp16(rng, start + 1, N_KV, HEAD_DIM)
    sinks = (rng.standard_normal(N_KV * GROUP) * 3).astype(np.float32) if with_sinks else None
    # The cache holds rotated keys; the new one arrives unrotated and the kernel turns it.
    out, k_cache, v_cache, (replayed, combined, tickets) = run_kernels(
        attention_main, workdir, True, q, k_all[first:start], v_all[first:start], k_all[start:], v_all[start:], start,
        capacity, window, sinks, yarn, blocks_per_head * N_KV * GROUP)
    assert np.array_equal(out.view(np.uint32), combined.view(np.uint32))
    assert np.array_equal(out.view(np.uint32), replayed.view(np.uint32))
    assert not tickets.any()
    rotated_q, rotated_k = ops_numpy.rope(q, k_all[start:], np.array([start]), BASE, True, YARN if yarn else None)
    stored_k = rotated_k.astype(np.float16).astype(np.float32)
    keys = np.concatenate([k_all[:start], stored_k])
    want = twin(rotated_q, keys, v_all, start, sinks, window).reshape(q.shape)
    np.testing.assert_allclose(out, want, rtol=2e-3, atol=2e-3)  # the rotated q and key: fp32 vs float64 angles
    slot = start % capacity
    assert np.array_equal(v_cache[:, slot].view(np.float16), v_all[start].astype(np.float16))
    assert np.abs(k_cache[:, slot].view(np.float16).astype(np.float32) - stored_k[0]).max() < 1e-2
