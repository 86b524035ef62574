"""What every model adapter shares (M0-W-1213): the hyperparameters that every architecture
names alike, and a KV cache sized from them.

An adapter subclasses `Adapter`, names its hyperparameter class (a `CommonHParams` with
`from_gguf(gguf)`) in `hparams_class` and sets `self.hp` and `self.ops` when it loads; its
weights and forward pass are its own (llama.py, gpt2.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from reference_worker.gguf_file import GGUFFile, load_failed


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
        if hp.n_embd % n_head or n_head % hp.n_head_kv:
            raise load_failed(f"{n_head} heads, {hp.n_head_kv} KV heads and width {hp.n_embd} do not fit together")
        return hp


def is_positive_float(value: Any) -> bool:
    return isinstance(value, float) and bool(np.isfinite(value)) and value > 0


class Adapter:
    """The KV-cache methods of every adapter, from `hparams_class` and `self.hp`, `self.ops`."""

    hparams_class: Any

    @classmethod
    def context_cache_bytes(cls, gguf: GGUFFile, kv_cache_bytes: Callable[[int, int, int, int], int]) -> int:
        """The bytes of a KV cache for the model's whole context, given a backend's
        kv_cache_bytes(n_layer, n_ctx, n_head_kv, head_dim): read before any weight is loaded."""
        hp = cls.hparams_class.from_gguf(gguf)
        return kv_cache_bytes(hp.n_layer, hp.n_ctx, hp.n_head_kv, hp.head_dim)

    def kv_cache_bytes(self, n_ctx: int) -> int:
        hp = self.hp
        return self.ops.kv_cache_bytes(hp.n_layer, n_ctx, hp.n_head_kv, hp.head_dim)

    def new_cache(self, n_ctx: int) -> Any:
        hp = self.hp
        return self.ops.new_kv_cache(hp.n_layer, n_ctx, hp.n_head_kv, hp.head_dim)
