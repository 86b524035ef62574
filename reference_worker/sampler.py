"""Choosing the next token from logits (M0-W-1030, M0-W-1032, M0-W-1421).

Temperature 0 is greedy (argmax). Otherwise the filters run in llama.cpp's order: repetition
penalty, top-k, top-p, min-p, then temperature scaling, softmax and a draw from a NumPy
Generator seeded by the request, so the same request gives the same tokens. Every filter is
off at its default (top_k 0, top_p 1.0, min_p 0.0, repetition_penalty 1.0).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from reference_worker.errors import ErrorCode, WorkerError

MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class SamplingParams:
    """What a request says about sampling; the defaults switch every filter off."""

    temperature: float = 1.0
    seed: int | None = None
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.temperature <= MAX_TEMPERATURE, f"temperature must be in [0, {MAX_TEMPERATURE}]"),
            (self.seed is None or 0 <= self.seed < 2**64, "seed must be in [0, 2^64)"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (0.0 <= self.min_p <= 1.0, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0.0, "repetition_penalty must be > 0"),
            (all(isinstance(s, str) and s for s in self.stop), "stop sequences must be non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise WorkerError(ErrorCode.INVALID_REQUEST, message)
        object.__setattr__(self, "stop", tuple(self.stop))


def new_seed() -> int:
    """A seed for a request that gave none (M0-W-1030: generated and reported back)."""
    return secrets.randbits(32)


def apply_repetition_penalty(logits: np.ndarray, history: Sequence[int], penalty: float) -> np.ndarray:
    """Logits of tokens seen in history divided by penalty when positive, multiplied when not
    (the CTRL paper's rule, as llama.cpp applies it)."""
    if penalty == 1.0 or not len(history):
        return logits
    out = logits.copy()
    seen = np.unique(np.asarray(history))
    out[seen] = np.where(out[seen] > 0, out[seen] / penalty, out[seen] * penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k highest logits (ties at the k-th value kept too); the rest become -inf."""
    if k <= 0 or k >= len(logits):
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits >= kth, logits, -np.inf)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - np.max(logits))
    return z / z.sum()


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    cumulative = np.cumsum(softmax(logits)[order])
    keep = order[: int(np.searchsorted(cumulative, p)) + 1]
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens whose probability is at least min_p times the top token's."""
    if min_p <= 0.0:
        return logits
    probs = softmax(logits)
    return np.where(probs >= min_p * probs.max(), logits, -np.inf)


class Sampler:
    """Draws tokens for one request; holds the request's RNG."""

    def __init__(self, params: SamplingParams, seed: int) -> None:
        self.params = params
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """The next token id given the logits of the last position and the tokens so far."""
        p = self.params
        # Overflowed weights: a NaN is never chosen, +inf is the largest finite number.
        logits = np.nan_to_num(np.asarray(logits, np.float64), nan=-np.inf, posinf=1e300, neginf=-np.inf)
        if logits.max() == -np.inf:
            raise WorkerError(ErrorCode.INTERNAL, "the model produced no usable logit")
        logits = apply_repetition_penalty(logits, history, p.repetition_penalty)
        if p.temperature == 0.0:
            return int(np.argmax(logits))
        logits = min_p_filter(top_p_filter(top_k_filter(logits, p.top_k), p.top_p), p.min_p)
        probs = softmax(logits / p.temperature)
        return int(self.rng.choice(len(probs), p=probs))
