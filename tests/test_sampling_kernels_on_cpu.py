"""sampling.cu's draw, run on the CPU (tests/cuda_on_cpu: each CUDA thread a fiber), against
sampler.py: where there is no GPU this still checks the kernels' logic (not their races).

For a seed and position the kernels draw u in [0, 1) (`draw_uniform`) and walk the kept tokens
until their running weight passes u times the total: over the sorted candidates (logit
descending, then id) where the candidates hold the kept set, in id order for the draw over the
whole vocabulary and the exact search. The twin does the same walk over sampler.py's
probabilities, so the two must choose the same token. Each case draws at a position whose u is
above 0.9999, so the token is the last one kept in that order: a filter that keeps one token
too many or too few changes it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import cpu_emulation
from reference_worker import sampler

pytestmark = pytest.mark.slow
MODES = ["greedy", "full", "candidates", "refine", "exact"]  # sampling.cu: SampleMode
SEED = 1234
_MASK = 2**64 - 1


@pytest.fixture(scope="module")
def sample_main(tmp_path_factory) -> Path:
    return cpu_emulation.build(tmp_path_factory, "sample_main")


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(seed: int, position: int) -> float:
    """sampling.cu's draw_uniform."""
    return float(np.float32(_splitmix64(seed ^ _splitmix64(position)) >> 40) * np.float32(1 / 16777216))


def _tail_position(seed: int) -> int:
    """The first position whose draw lands in the last 1e-4 of the kept mass."""
    return next(p for p in range(10**6) if _uniform(seed, p) > 0.9999)


def _twin_probabilities(logits: np.ndarray, params: sampler.SamplingParams) -> np.ndarray:
    filtered = sampler.top_p_filter(sampler.top_k_filter(logits.astype(np.float64), params.top_k), params.top_p)
    return sampler.softmax(sampler.min_p_filter(filtered, params.min_p) / params.temperature)


def _twin_pick(logits: np.ndarray, probs: np.ndarray, position: int, sorted_walk: bool) -> int:
    kept = np.flatnonzero(probs > 0)
    if sorted_walk:
        kept = kept[np.lexsort((kept, -logits[kept].astype(np.float64)))]
    running = np.cumsum(probs[kept])
    return int(kept[min(len(kept) - 1, np.searchsorted(running, _uniform(SEED, position) * running[-1], "right"))])


_RNG = np.random.default_rng(11)
N = 20000
CASES = {  # name -> (logits, params, the path sampling.cu should take)
    "top-k 40, top-p 0.9, min-p 0.05": (_RNG.standard_normal(N) * 3,
                                        sampler.SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05),
                                        ("candidates", "candidates")),
    "top-k 40 within one 12-bit bin": (16 + 1e-3 * _RNG.standard_normal(N), sampler.SamplingParams(top_k=40),
                                       ("refine", "candidates")),
    "top-p 0.8 alone, peaked": (_RNG.standard_normal(N) * 4, sampler.SamplingParams(top_p=0.8),
                                ("refine", "candidates")),
    "min-p 0.01 alone (the whole vocabulary)": (_RNG.standard_normal(N) * 2, sampler.SamplingParams(min_p=0.01),
                                                ("full", "full")),
    "top-k 3 over ~830 ties": (_RNG.integers(-3, 3, 5000).astype(np.float64), sampler.SamplingParams(top_k=3),
                               ("candidates", "candidates")),
    "top-k 3 over 3,300 ties (the exact search)": (_RNG.integers(-3, 3, N).astype(np.float64),
                                                   sampler.SamplingParams(top_k=3), ("refine", "exact")),
    "top-p 0.9 alone, flat (the exact search)": (_RNG.standard_normal(N), sampler.SamplingParams(top_p=0.9),
                                                 ("refine", "candidates")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_kernels_choose_the_twins_token(sample_main, tmp_path, case):
    logits, params, (first_mode, final_mode) = CASES[case]
    logits = logits.astype(np.float32)
    logits.tofile(tmp_path / "logits.f32")
    out = subprocess.run([str(sample_main), str(tmp_path / "logits.f32"), str(len(logits)), str(params.temperature),
                          str(params.top_p), str(params.min_p), str(params.top_k), str(SEED), str(_tail_position(SEED))],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    probs = _twin_probabilities(logits, params)
    for line in out.splitlines():
        position, token, mode1, mode, candidates, _, arrived, histogram_left = map(int, line.split())
        assert (MODES[mode1], MODES[mode]) == (first_mode, final_mode)
        assert arrived == 0 and histogram_left == 0, "a draw left its scratch dirty for the next"
        # sample_pick walks the sorted candidates where they hold the kept set, else runs the exact search
        sorted_walk = MODES[mode] == "candidates" and int((probs > 0).sum()) <= candidates
        assert token == _twin_pick(logits, probs, position, sorted_walk)
