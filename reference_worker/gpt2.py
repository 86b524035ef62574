"""The GPT-style adapter (M0-W-1215): GGUF architecture "gpt2" (and the spec's alias "gpt",
§6.2 M0-W-1212) on any backend's ops.

The forward pass, in order: token embedding plus the learned position embedding (M0-W-1434);
per layer LayerNorm with weight and bias (M0-W-1432), the fused Q/K/V projection with its bias,
multi-head attention over the KV cache (no rotation: positions are already in the
activations), output projection with bias, residual add, LayerNorm, feed-forward up projection
with bias, GELU (tanh approximation, M0-W-1433), down projection with bias, residual add; final
LayerNorm and the output head (the token table when the file has no `output.weight`).
Tensor names and metadata keys are llama.cpp's (src/models/gpt2.cpp); `llama.py` is the
Llama family's adapter of the same shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from reference_worker.adapter import Adapter, CommonHParams
from reference_worker.gguf_file import GGUFFile, load_failed
from reference_worker.llama import _shaped


@dataclass(frozen=True)
class HParams(CommonHParams):
    """Shape of a GPT-2-style model, read from `{arch}.*` metadata."""

    @property
    def qkv_rows(self) -> int:
        return self.n_embd + 2 * self.n_head_kv * self.head_dim

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> HParams:
        return cls.read(gguf, "attention.layer_norm_epsilon")


@dataclass
class Layer:
    attn_norm: Any
    attn_norm_b: Any
    w_qkv: Any
    b_qkv: Any
    wo: Any
    bo: Any
    ffn_norm: Any
    ffn_norm_b: Any
    w_up: Any
    b_up: Any
    w_down: Any
    b_down: Any


class GPT2Adapter(Adapter):
    """Weights of one GPT-2-style model on a backend, and its forward pass."""

    architecture_name = "gpt2"
    hparams_class = HParams

    def __init__(self, gguf: GGUFFile, ops: ModuleType, on_progress: Callable[[float], None] = lambda _: None) -> None:
        self.ops = ops
        self.hp = hp = HParams.from_gguf(gguf)
        self.tok_embd = ops.load_embedding(_shaped(gguf, "token_embd.weight", (hp.n_vocab, hp.n_embd)))
        self.pos_embd = ops.load_embedding(_position_table(gguf, hp))
        self.layers = []
        for i in range(hp.n_layer):
            self.layers.append(self._load_layer(gguf, f"blk.{i}."))
            on_progress((i + 1) / (hp.n_layer + 1))
        self.output_norm = ops.load_vector(_shaped(gguf, "output_norm.weight", (hp.n_embd,)))
        self.output_norm_b = ops.load_vector(_shaped(gguf, "output_norm.bias", (hp.n_embd,)))
        head = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"  # tied head
        self.output = ops.load_matrix(_shaped(gguf, head, (hp.n_vocab, hp.n_embd)))
        on_progress(1.0)

    def _load_layer(self, gguf: GGUFFile, prefix: str) -> Layer:
        hp, ops = self.hp, self.ops

        def matrix(name: str, rows: int, cols: int) -> Any:
            return ops.load_matrix(_shaped(gguf, f"{prefix}{name}.weight", (rows, cols)))

        def vector(name: str, part: str, size: int) -> Any:
            return ops.load_vector(_shaped(gguf, f"{prefix}{name}.{part}", (size,)))

        return Layer(
            attn_norm=vector("attn_norm", "weight", hp.n_embd), attn_norm_b=vector("attn_norm", "bias", hp.n_embd),
            w_qkv=matrix("attn_qkv", hp.qkv_rows, hp.n_embd), b_qkv=vector("attn_qkv", "bias", hp.qkv_rows),
            wo=matrix("attn_output", hp.n_embd, hp.n_embd), bo=vector("attn_output", "bias", hp.n_embd),
            ffn_norm=vector("ffn_norm", "weight", hp.n_embd), ffn_norm_b=vector("ffn_norm", "bias", hp.n_embd),
            w_up=matrix("ffn_up", hp.n_ff, hp.n_embd), b_up=vector("ffn_up", "bias", hp.n_ff),
            w_down=matrix("ffn_down", hp.n_embd, hp.n_ff), b_down=vector("ffn_down", "bias", hp.n_embd),
        )

    def forward(self, tokens: list[int], start: int, cache: Any, all_logits: bool = False) -> np.ndarray:
        """Run tokens at positions start.. through the model, extending cache.

        Returns the logits of the last token (vocab,), or of every token (n, vocab) with all_logits.
        """
        ops, hp = self.ops, self.hp
        n, kv_width = len(tokens), hp.n_head_kv * hp.head_dim
        x = ops.add_positions(ops.embed(self.tok_embd, np.asarray(tokens)), self.pos_embd, start)
        for i, layer in enumerate(self.layers):
            h = ops.layernorm(x, layer.attn_norm, layer.attn_norm_b, hp.eps)
            qkv = ops.matmul(h, layer.w_qkv, bias=layer.b_qkv)  # rows: all of Q, then K, then V
            q = qkv[:, :hp.n_embd].reshape(n, hp.n_head, hp.head_dim)
            k = qkv[:, hp.n_embd:hp.n_embd + kv_width].reshape(n, hp.n_head_kv, hp.head_dim)
            v = qkv[:, hp.n_embd + kv_width:].reshape(n, hp.n_head_kv, hp.head_dim)
            x = ops.matmul(ops.attention(q, k, v, cache, i, start), layer.wo, bias=layer.bo, residual=x)
            h = ops.layernorm(x, layer.ffn_norm, layer.ffn_norm_b, hp.eps)
            x = ops.matmul(ops.gelu(ops.matmul(h, layer.w_up, bias=layer.b_up)), layer.w_down, bias=layer.b_down,
                           residual=x)
        x = ops.layernorm(x if all_logits else ops.last_row(x), self.output_norm, self.output_norm_b, hp.eps)
        logits = ops.to_host(ops.matmul(x, self.output))
        return logits if all_logits else logits[0]


def _position_table(gguf: GGUFFile, hp: HParams):
    """position_embd.weight: one learned row per position of the declared context (M0-W-1434)."""
    if "position_embd.weight" not in gguf.tensors:
        raise load_failed("tensor 'position_embd.weight' (the learned position embeddings a gpt2 model needs) "
                          "is missing from the model file")
    rows = gguf.tensors["position_embd.weight"].shape[0]
    if rows < hp.n_ctx:
        raise load_failed(f"the position table has {rows} rows, fewer than the context length {hp.n_ctx} "
                          "the file declares", positions=rows, context_length=hp.n_ctx)
    return _shaped(gguf, "position_embd.weight", (hp.n_ctx, hp.n_embd))
