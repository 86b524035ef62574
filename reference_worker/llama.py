"""The Llama-style adapter (M0-W-1213/1214): qwen2, llama and phi3 on any backend's ops.

The forward pass, in order: embedding lookup; per layer RMSNorm, Q/K/V projections (+ biases
where the file has them), RoPE on Q and K, GQA attention over the KV cache, output projection,
residual add, RMSNorm, SwiGLU feed-forward, residual add; final RMSNorm and the output head
(the token table itself when the file has no `output.weight`: a tied head).
The ops (`ops_numpy.py` documents them) decide where the numbers live; this file only says
what is computed. The GPT-style adapter (gpt2.py) has the same three methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from reference_worker.adapter import Adapter, CommonHParams, is_positive_float
from reference_worker.gguf_file import GGUFFile, Tensor, load_failed

# Pairing of rotated dimensions per architecture (llama.cpp llama_model_rope_type):
# llama's converter permutes Q/K so adjacent pairs rotate; qwen2 and phi3 rotate i with i + D/2.
NEOX_ROPE = {"qwen2": True, "phi3": True, "llama": False}


@dataclass(frozen=True)
class HParams(CommonHParams):
    """Shape of a Llama-style model, read from `{arch}.*` metadata."""

    rope_base: float
    rope_neox: bool

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> HParams:
        hp = cls.read(gguf, "attention.layer_norm_rms_epsilon", rope_base=gguf.hparam("rope.freq_base", 10000.0),
                      rope_neox=NEOX_ROPE[gguf.architecture])
        if not is_positive_float(hp.rope_base):
            raise load_failed(f"model hyperparameters are out of range: {hp}")
        if hp.head_dim % 2:
            raise load_failed(f"{hp.n_head} heads, {hp.n_head_kv} KV heads and width {hp.n_embd} do not fit together")
        if gguf.hparam("rope.dimension_count", hp.head_dim) != hp.head_dim:
            raise load_failed("partial rotary embeddings are not supported")
        # phi3.attention.sliding_window (Phi-3-Mini: 2047) is read and not applied, as llama.cpp
        # does (models/phi3.cpp: "Phi SWA is currently disabled"): attention sees the whole context.
        return hp


@dataclass
class Layer:
    attn_norm: Any
    wq: Any
    wk: Any
    wv: Any
    bq: Any | None
    bk: Any | None
    bv: Any | None
    wo: Any
    ffn_norm: Any
    w_gate: Any
    w_up: Any
    w_down: Any


def _shaped(gguf: GGUFFile, name: str, shape: tuple[int, ...]) -> Tensor:
    """The tensor called name, which must have the (numpy-order) shape the hyperparameters imply."""
    tensor = gguf.tensor(name)
    if tensor.shape != shape:
        raise load_failed(f"tensor {name!r} has shape {tensor.shape}; the model's hyperparameters need {shape}")
    return tensor


def _row_split(tensor: Tensor, sizes: list[int]) -> list[Tensor]:
    """Split a fused weight (phi3's attn_qkv, gate+up ffn_up) by output rows; views, no copies."""
    if sum(sizes) != tensor.n_rows:
        raise load_failed(f"tensor {tensor.name!r} has {tensor.n_rows} rows, expected {sum(sizes)}")
    parts, start = [], 0
    for size in sizes:
        raw = tensor.raw[start:start + size]
        offset = tensor.offset + start * tensor.raw.shape[1]
        parts.append(Tensor(tensor.name, tensor.qtype, (size, *tensor.shape[1:]), offset, raw.nbytes, raw))
        start += size
    return parts


class LlamaAdapter(Adapter):
    """Weights of one Llama-style model on a backend, and its forward pass."""

    architecture_name = "llama"
    hparams_class = HParams

    def __init__(self, gguf: GGUFFile, ops: ModuleType, on_progress: Callable[[float], None] = lambda _: None) -> None:
        self.ops = ops
        self.hp = hp = HParams.from_gguf(gguf)
        self.tok_embd = ops.load_embedding(_shaped(gguf, "token_embd.weight", (hp.n_vocab, hp.n_embd)))
        self.layers = []
        for i in range(hp.n_layer):
            self.layers.append(self._load_layer(gguf, ops, f"blk.{i}."))
            on_progress((i + 1) / (hp.n_layer + 1))
        self.output_norm = ops.load_vector(_shaped(gguf, "output_norm.weight", (hp.n_embd,)))
        # A tied head multiplies by the token table itself.
        head = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"
        self.output = ops.load_matrix(_shaped(gguf, head, (hp.n_vocab, hp.n_embd)))
        on_progress(1.0)

    def _load_layer(self, gguf: GGUFFile, ops: ModuleType, prefix: str) -> Layer:
        hp = self.hp
        kv_rows = hp.n_head_kv * hp.head_dim
        if prefix + "attn_qkv.weight" in gguf.tensors:
            fused = _shaped(gguf, prefix + "attn_qkv.weight", (hp.n_embd + 2 * kv_rows, hp.n_embd))
            q, k, v = _row_split(fused, [hp.n_embd, kv_rows, kv_rows])
        else:
            q = _shaped(gguf, prefix + "attn_q.weight", (hp.n_embd, hp.n_embd))
            k, v = (_shaped(gguf, f"{prefix}attn_{p}.weight", (kv_rows, hp.n_embd)) for p in "kv")
        if prefix + "ffn_gate.weight" in gguf.tensors:
            gate, up = (_shaped(gguf, f"{prefix}ffn_{p}.weight", (hp.n_ff, hp.n_embd)) for p in ("gate", "up"))
        else:
            gate, up = _row_split(_shaped(gguf, prefix + "ffn_up.weight", (2 * hp.n_ff, hp.n_embd)), [hp.n_ff, hp.n_ff])

        def bias(p: str, rows: int) -> Any | None:
            name = f"{prefix}attn_{p}.bias"
            return ops.load_vector(_shaped(gguf, name, (rows,))) if name in gguf.tensors else None

        biases = [bias("q", hp.n_embd), bias("k", kv_rows), bias("v", kv_rows)]
        if any(b is None for b in biases) and any(b is not None for b in biases):
            raise load_failed(f"{prefix}: the file has some of the Q/K/V biases but not all")
        return Layer(
            attn_norm=ops.load_vector(_shaped(gguf, prefix + "attn_norm.weight", (hp.n_embd,))),
            wq=ops.load_matrix(q), wk=ops.load_matrix(k), wv=ops.load_matrix(v),
            bq=biases[0], bk=biases[1], bv=biases[2],
            wo=ops.load_matrix(_shaped(gguf, prefix + "attn_output.weight", (hp.n_embd, hp.n_embd))),
            ffn_norm=ops.load_vector(_shaped(gguf, prefix + "ffn_norm.weight", (hp.n_embd,))),
            w_gate=ops.load_matrix(gate), w_up=ops.load_matrix(up),
            w_down=ops.load_matrix(_shaped(gguf, prefix + "ffn_down.weight", (hp.n_embd, hp.n_ff))),
        )

    def forward(self, tokens: list[int], start: int, cache: Any, all_logits: bool = False) -> np.ndarray:
        """Run tokens at positions start.. through the model, extending cache.

        Returns the logits of the last token (vocab,), or of every token (n, vocab) with all_logits.
        """
        ops, hp = self.ops, self.hp
        n = len(tokens)
        x = ops.embed(self.tok_embd, np.asarray(tokens))
        for i, layer in enumerate(self.layers):
            q, k, v = ops.rmsnorm_matmuls(x, layer.attn_norm, hp.eps,
                                          [(layer.wq, layer.bq), (layer.wk, layer.bk), (layer.wv, layer.bv)])
            attn = ops.rope_attention(q.reshape(n, hp.n_head, hp.head_dim), k.reshape(n, hp.n_head_kv, hp.head_dim),
                                      v.reshape(n, hp.n_head_kv, hp.head_dim), cache, i, start, hp.rope_base,
                                      hp.rope_neox)
            x = ops.matmul(attn, layer.wo, residual=x)
            ffn = ops.rmsnorm_gated_ffn(x, layer.ffn_norm, hp.eps, layer.w_gate, layer.w_up)
            x = ops.matmul(ffn, layer.w_down, residual=x)
        x = ops.rmsnorm(x if all_logits else ops.last_row(x), self.output_norm, hp.eps)
        logits = ops.to_host(ops.matmul(x, self.output))
        return logits if all_logits else logits[0]
