"""What every model adapter shares (M0-W-1213): the hyperparameters that every architecture
names alike, and a KV cache sized from them (CacheShape).

An adapter subclasses `Adapter`, names its hyperparameter class (a `CommonHParams` with
`from_gguf(gguf)`) in `hparams_class` and sets `self.hp` and `self.ops` when it loads; its
weights and forward pass are its own (llama.py, gpt2.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from reference_worker.gguf_file import GGUFFile, load_failed

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: the KV cache is sized per layer before any weight loads


@dataclass(frozen=True)
class CommonHParams:
    """The shape of a transformer, read from `{arch}.*` metadata; subclasses add their own fields."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    n_vocab: int
    eps: float

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def read(cls, gguf: GGUFFile, eps_key: str, **extra: Any):
        """cls from the shared keys, the norm epsilon under eps_key and the subclass's extra fields;
        WorkerError(MODEL_LOAD_FAILED) unless the counts are positive, eps finite and positive,
        and the heads fit the width."""
        n_head = gguf.hparam("attention.head_count")
        hp = cls(
            n_layer=gguf.hparam("block_count"), n_embd=gguf.hparam("embedding_length"), n_head=n_head,
            n_head_kv=gguf.hparam("attention.head_count_kv", n_head), n_ff=gguf.hparam("feed_forward_length"),
            n_ctx=gguf.hparam("context_length"), n_vocab=gguf.tensor("token_embd.weight").shape[0],
            eps=gguf.hparam(eps_key), **extra,
        )
        counts = (hp.n_layer, hp.n_embd, n_head, hp.n_head_kv, hp.n_ff, hp.n_ctx)
        if not all(isinstance(v, int) and v > 0 for v in counts) or not is_positive_float(hp.eps):
            raise load_failed(f"model hyperparameters are out of range: {hp}")
        if hp.n_layer > MAX_LAYERS:
            raise load_failed(f"block_count {hp.n_layer} is over llama.cpp's limit of {MAX_LAYERS} layers")
        if hp.n_embd % n_head or n_head % hp.n_head_kv:
            raise load_failed(f"{n_head} heads, {hp.n_head_kv} KV heads and width {hp.n_embd} do not fit together")
        return hp


def is_positive_float(value: Any) -> bool:
    return isinstance(value, float) and bool(np.isfinite(value)) and value > 0


PREFILL_CHUNK = 256  # prompt tokens per forward call: bounds the attention scratch and what a
                     # sliding-window layer's ring must hold beyond its window


@dataclass(frozen=True)
class CacheShape:
    """The KV cache a model needs, known from its hyperparameters before any weight is loaded.

    A full-attention layer holds every position of the cache; a sliding-window layer only what
    its queries can still read: its window plus one prefill chunk, as a ring (position p at slot
    p mod capacity), as llama.cpp's SWA cache does. A chunk of PREFILL_CHUNK tokens is stored
    before it attends, so its first query still finds the window - 1 positions before it.
    """

    windows: tuple[int, ...]  # per layer: the sliding window, 0 for full attention
    n_head_kv: int
    head_dim: int

    def capacities(self, n_ctx: int) -> tuple[int, ...]:
        """Positions each layer holds in a cache that serves n_ctx positions."""
        return tuple(n_ctx if w == 0 else min(n_ctx, w + PREFILL_CHUNK) for w in self.windows)

    def nbytes(self, n_ctx: int, kv_cache_bytes: Callable[[tuple[int, ...], int, int], int]) -> int:
        """Bytes of a cache of n_ctx positions, given a backend's kv_cache_bytes."""
        return kv_cache_bytes(self.capacities(n_ctx), self.n_head_kv, self.head_dim)

    def positions_within(self, budget_bytes: int, limit: int,
                         kv_cache_bytes: Callable[[tuple[int, ...], int, int], int]) -> int:
        """The most positions (at most limit) whose cache fits budget_bytes; 0 when not even one."""
        low, high = 0, limit  # nbytes grows with the positions: bisect for the last that fits
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.nbytes(mid, kv_cache_bytes) <= budget_bytes else (low, mid - 1)
        return low


class Adapter:
    """The KV-cache methods of every adapter, from `hparams_class` and `self.hp`, `self.ops`."""

    hparams_class: Any

    @classmethod
    def layer_windows(cls, hp: Any) -> tuple[int, ...]:
        """Each layer's sliding window (0: full attention); an adapter with windows overrides it."""
        return (0,) * hp.n_layer

    @classmethod
    def cache_shape(cls, hp: Any) -> CacheShape:
        """The CacheShape of a model with hyperparameters hp (`hparams_class.from_gguf` reads them
        before any weight is loaded: the engine sizes the cache, and the VRAM it reserves, first)."""
        return CacheShape(cls.layer_windows(hp), hp.n_head_kv, hp.head_dim)

    def kv_cache_bytes(self, n_ctx: int) -> int:
        return self.cache_shape(self.hp).nbytes(n_ctx, self.ops.kv_cache_bytes)

    def new_cache(self, n_ctx: int) -> Any:
        shape = self.cache_shape(self.hp)
        return self.ops.new_kv_cache(n_ctx, shape.capacities(n_ctx), shape.n_head_kv, shape.head_dim)
