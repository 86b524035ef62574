"""moe.cu's grouped expert path (kernels.moe_ffn_grouped) run on the CPU (tests/cuda_on_cpu: each
CUDA thread a fiber) against ops_numpy.expert_ffn: where there is no GPU this still checks its
logic (the sort by expert, the tile table, the gathered tiles, the slot-order sum), not its
races. The emulation has no fp16 conversion, so the types run here are those whose decoders need
none (F32, BF16, MXFP4); test_gpt_oss_cuda.py runs every type, and both paths, on a GPU.

The helpers below (routing, expert stacks, inputs, the twin) are shared with test_gpt_oss_cuda.py.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from hypothesis import given, settings
from hypothesis import strategies as st

import cpu_emulation
from reference_worker import ops_numpy
from reference_worker.gguf_file import Tensor
from reference_worker.synthetic import encode_weight

pytestmark = pytest.mark.slow
MOE_TILE = 32  # moe.cu
ROUTINGS = ["random", "every token through one expert", "half the experts idle"]


def routing(rng: np.random.Generator, how: str, n_tok: int, n_expert: int, k: int) -> np.ndarray:
    """(n_tok, k) int32 expert ids, k distinct ones a token, drawn as `how` says (ROUTINGS)."""
    pool = np.arange(n_expert)
    if how == "half the experts idle":
        pool = rng.choice(n_expert, max(k, n_expert // 2), replace=False)
    ids = np.stack([rng.choice(pool, k, replace=False) for _ in range(n_tok)])
    if how == "every token through one expert":  # expert 0 in one of each token's slots
        missing = ~(ids == 0).any(axis=1)
        ids[missing, rng.integers(0, k, missing.sum())] = 0
    return ids.astype(np.int32)


def moe_inputs(rng: np.random.Generator, n_tok: int, n_embd: int, n_expert: int, k: int, how: str = "random"):
    """x, ids, weights, residual for an expert FFN of n_tok tokens."""
    x = rng.standard_normal((n_tok, n_embd)).astype(np.float32)
    ids = routing(rng, how, n_tok, n_expert, k)
    weights = rng.random((n_tok, k)).astype(np.float32)
    return x, ids, weights, rng.standard_normal(x.shape).astype(np.float32)


def random_experts(qtype: Q, n_expert: int, n_ff: int, n_embd: int, seed: int) -> ops_numpy.Experts:
    """The twin's experts with every stack in qtype's encoding (random values, std 0.05)."""
    rng = np.random.default_rng(seed)
    stacks = []
    for name, rows, cols in (("gate", n_ff, n_embd), ("up", n_ff, n_embd), ("down", n_embd, n_ff)):
        raw = np.ascontiguousarray(encode_weight(rng, qtype, n_expert * rows, cols, 0.05)).view(np.uint8)
        raw = raw.reshape(n_expert * rows, -1)
        stacks.append(Tensor(f"ffn_{name}_exps.weight", qtype, (n_expert, rows, cols), 0, raw.nbytes, raw))
    biases = [rng.standard_normal((n_expert, rows)).astype(np.float32) for rows in (n_ff, n_ff, n_embd)]
    return ops_numpy.Experts(*(ops_numpy.QuantizedExperts(t) for t in stacks), *biases)


def twin_moe(twin: ops_numpy.Experts, x, ids, weights, residual) -> np.ndarray:
    return ops_numpy.expert_ffn(x.astype(np.float64), ids, weights, twin, residual.astype(np.float64))


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


@pytest.fixture(scope="module")
def moe_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "moe_main")


def run_on_cpu(binary: Path, tmp: Path, kernel: str, twin: ops_numpy.Experts, x, ids, weights, residual):
    """moe_main's (n_tiles, order, tiles (n_tiles, 3), output) with the tiled or the mma kernels."""
    n_tok, k = ids.shape
    gate, up, down = (s.tensor for s in (twin.gate, twin.up, twin.down))
    header = np.array([gate.qtype, gate.shape[0], gate.shape[1], gate.shape[2], n_tok, k, gate.raw.shape[1],
                       down.raw.shape[1]], np.int32)
    parts = [header, gate.raw, up.raw, down.raw, twin.gate_bias, twin.up_bias, twin.down_bias, x, ids, weights,
             residual]
    (tmp / "in.bin").write_bytes(b"".join(np.ascontiguousarray(p).tobytes() for p in parts))
    subprocess.run([str(binary), str(tmp / "in.bin"), str(tmp / "out.bin"), kernel], check=True, capture_output=True)
    out = np.fromfile(tmp / "out.bin", np.uint8)
    n_tiles = int(out[:4].view(np.int32)[0])
    ints = out[:4 * (1 + n_tok * k + 3 * n_tiles)].view(np.int32)
    return (n_tiles, ints[1:1 + n_tok * k], ints[1 + n_tok * k:].reshape(n_tiles, 3),
            out[ints.nbytes:].view(np.float32).reshape(n_tok, -1))


KERNELS_RUN = ["tiled", "mma"]  # moe_tiled_* (fp32) and moe_mma_* (tensor cores, bf16 pairs)


def check_grouped(binary: Path, tmp: Path, kernel: str, qtype: Q, n_tok: int, how: str, n_expert: int, k: int,
                  seed: int, n_ff: int = 64) -> None:
    twin = random_experts(qtype, n_expert, n_ff, 64, seed)
    x, ids, weights, residual = moe_inputs(np.random.default_rng(seed), n_tok, 64, n_expert, k, how)
    n_tiles, order, tiles, got = run_on_cpu(binary, tmp, kernel, twin, x, ids, weights, residual)
    # order: the pairs t * k + j sorted by expert, stably (by token within an expert)
    assert np.array_equal(order, np.argsort(ids.reshape(-1), kind="stable"))
    counts = np.bincount(ids.reshape(-1), minlength=n_expert)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    want_tiles = [(e, starts[e] + i, min(MOE_TILE, counts[e] - i)) for e in range(n_expert)
                  for i in range(0, counts[e], MOE_TILE)]
    assert n_tiles == len(want_tiles) and np.array_equal(tiles, np.array(want_tiles, np.int32).reshape(-1, 3))
    assert rel_err(got, twin_moe(twin, x, ids, weights, residual)) < 1e-5


# (type, tokens, routing, experts, slots): tiles of 32 pairs full and partial, one expert with
# every token (three tiles), idle experts, a single token, a single expert.
CASES = [(Q.MXFP4, 70, "every token through one expert", 3, 2), (Q.F32, 1, "random", 8, 4),
         (Q.BF16, 37, "half the experts idle", 40, 4), (Q.MXFP4, 33, "random", 1, 1), (Q.MXFP4, 50, "random", 5, 3)]


@pytest.mark.parametrize("kernel", KERNELS_RUN)
@pytest.mark.parametrize(("qtype", "n_tok", "how", "n_expert", "k"), CASES,
                         ids=[f"{q.name}-{n}tok-{e}experts-top{k}" for q, n, _, e, k in CASES])
def test_grouped_expert_kernels_sort_by_expert_and_match_the_twin(moe_main, tmp_path, kernel, qtype, n_tok, how,
                                                                   n_expert, k):
    check_grouped(moe_main, tmp_path, kernel, qtype, n_tok, how, n_expert, k, seed=n_tok * 100 + n_expert)


@pytest.mark.parametrize("kernel", KERNELS_RUN)
@settings(max_examples=8, deadline=None)
@given(qtype=st.sampled_from([Q.F32, Q.BF16, Q.MXFP4]), n_tok=st.integers(1, 150), how=st.sampled_from(ROUTINGS),
       n_expert=st.integers(1, 64), k=st.integers(1, 4), n_ff=st.sampled_from([32, 64, 96]),
       seed=st.integers(0, 2**32 - 1))
def test_grouped_expert_kernels_on_any_routing(moe_main, tmp_path_factory, kernel, qtype, n_tok, how, n_expert, k,
                                               n_ff, seed):
    """Rows a block (32 tiled, 64 mma) cut by n_ff too."""
    check_grouped(moe_main, tmp_path_factory.mktemp("moe"), kernel, qtype, n_tok, how, n_expert, min(k, n_expert),
                  seed, n_ff)
