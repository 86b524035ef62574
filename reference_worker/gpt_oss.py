"""The GPT-OSS adapter (llama.cpp's "gpt-oss" architecture, src/models/openai-moe.cpp) on any
backend's ops.

The forward pass, in order: embedding lookup; per layer RMSNorm, Q/K/V projections with
biases, RoPE with YaRN scaling on Q and K, GQA attention over the KV cache with a learned sink
logit per head and, on the sliding-window layers (every other one, from layer 0), a window of
`sliding_window` positions; output projection with bias, residual add; RMSNorm
(post_attention_norm), the router (a linear layer with bias) picks the top `expert_used_count`
experts of each token and weights them by a softmax over their logits; each routed expert is a
gate/up/down feed-forward with biases and GPT-OSS's clamped SwiGLU; the weighted sum, residual
add; final RMSNorm and the untied output head.
The width of the attention (n_head x key_length = 64 x 64 in the 20B) is not the model's width
(2880): Q and the output projection are shaped by the heads.
The ops (`ops_numpy.py` documents them) decide where the numbers live; this file only says
what is computed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable

import numpy as np

from reference_worker.adapter import MAX_LAYERS, Adapter, is_positive_float
from reference_worker.gguf_file import GGUFFile, load_failed
from reference_worker.ops_numpy import YaRN

MAX_EXPERTS = 256  # llama.cpp's LLAMA_MAX_EXPERTS, and the bound of moe.cu's router


@dataclass(frozen=True)
class HParams:
    """Shape of a GPT-OSS model, read from `gpt-oss.*` metadata. Not a CommonHParams: the head
    size is its own key (attention.key_length), not the width over the heads."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ctx: int
    n_vocab: int
    eps: float
    rope_base: float
    yarn: YaRN | None
    sliding_window: int
    sliding: tuple[bool, ...]  # per layer: whether it attends through the window

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> HParams:
        n_layer = gguf.hparam("block_count")
        n_head = gguf.hparam("attention.head_count")
        n_embd = gguf.hparam("embedding_length")
        width_per_head = n_embd // n_head if all(isinstance(v, int) and v > 0 for v in (n_embd, n_head)) else 0
        head_dim = gguf.hparam("attention.key_length", width_per_head)
        if gguf.hparam("attention.value_length", head_dim) != head_dim:
            raise load_failed("key_length and value_length differ; one head size is supported")
        hp = cls(
            n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=gguf.hparam("attention.head_count_kv", n_head),
            head_dim=head_dim, n_expert=gguf.hparam("expert_count"), n_expert_used=gguf.hparam("expert_used_count"),
            n_ff_exp=gguf.hparam("expert_feed_forward_length"), n_ctx=gguf.hparam("context_length"),
            n_vocab=gguf.tensor("token_embd.weight").shape[0], eps=gguf.hparam("attention.layer_norm_rms_epsilon"),
            rope_base=gguf.hparam("rope.freq_base", 10000.0), yarn=_yarn(gguf),
            sliding_window=gguf.hparam("attention.sliding_window"), sliding=(),
        )
        counts = (hp.n_layer, n_embd, n_head, hp.n_head_kv, head_dim, hp.n_expert, hp.n_expert_used, hp.n_ff_exp,
                  hp.n_ctx, hp.sliding_window)
        if not all(isinstance(v, int) and v > 0 for v in counts) or not all(
                is_positive_float(v) for v in (hp.eps, hp.rope_base)):
            raise load_failed(f"model hyperparameters are out of range: {hp}")
        if hp.n_layer > MAX_LAYERS:
            raise load_failed(f"block_count {hp.n_layer} is over llama.cpp's limit of {MAX_LAYERS} layers")
        if not hp.n_expert_used <= hp.n_expert <= MAX_EXPERTS:
            raise load_failed(f"expert_used_count {hp.n_expert_used} and expert_count {hp.n_expert} do not fit "
                              f"together (1 <= used <= count <= {MAX_EXPERTS})")
        if n_head % hp.n_head_kv or head_dim % 2:
            raise load_failed(f"{n_head} heads of {head_dim} over {hp.n_head_kv} KV heads do not fit together")
        if gguf.hparam("rope.dimension_count", head_dim) != head_dim:
            raise load_failed("partial rotary embeddings are not supported")
        return replace(hp, sliding=_sliding_layers(gguf, hp.n_layer))


def _yarn(gguf: GGUFFile) -> YaRN | None:
    """YaRN scaling when rope.scaling.type says "yarn"; None for no scaling."""
    kind = gguf.hparam("rope.scaling.type", "none")
    if kind in ("none", "linear") and gguf.hparam("rope.scaling.factor", 1.0) == 1.0:
        return None
    factor = gguf.hparam("rope.scaling.factor", 0.0)
    if kind != "yarn" or not isinstance(factor, float) or not factor > 1.0:
        raise load_failed(f"rope scaling {kind!r} with factor {factor!r} is not supported (only YaRN, factor > 1)")
    n_ctx_orig = gguf.hparam("rope.scaling.original_context_length", gguf.hparam("context_length"))
    if not isinstance(n_ctx_orig, int) or n_ctx_orig <= 0:
        raise load_failed(f"rope.scaling.original_context_length {n_ctx_orig!r} is not a positive count")
    return YaRN(factor=factor, n_ctx_orig=n_ctx_orig)


def _sliding_layers(gguf: GGUFFile, n_layer: int) -> tuple[bool, ...]:
    """Which layers use the sliding window (llama.cpp load_swa_pattern, default pattern 2):
    an array of booleans as written, else a period n where layers il % n < n - 1 slide."""
    pattern = gguf.hparam("attention.sliding_window_pattern", 2)
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise load_failed(f"sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
        return tuple(bool(p) for p in pattern)
    if not isinstance(pattern, int) or pattern < 0:
        raise load_failed(f"sliding_window_pattern {pattern!r} is not a layer period")
    return tuple(pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer))


@dataclass
class Layer:
    attn_norm: Any
    wq: Any
    wk: Any
    wv: Any
    bq: Any
    bk: Any
    bv: Any
    wo: Any
    bo: Any
    sinks: Any
    sliding_window: int  # positions each query sees; 0: the whole context
    post_attn_norm: Any
    w_router: Any
    b_router: Any
    experts: Any


class GptOssAdapter(Adapter):
    """Weights of one GPT-OSS model on a backend, and its forward pass."""

    architecture_name = "gpt-oss"
    hparams_class = HParams

    @classmethod
    def layer_windows(cls, hp: HParams) -> tuple[int, ...]:
        """The sliding-window layers' window (their KV cache is a ring, adapter.CacheShape)."""
        return tuple(hp.sliding_window if sliding else 0 for sliding in hp.sliding)

    def __init__(self, gguf: GGUFFile, ops: ModuleType, on_progress: Callable[[float], None] = lambda _: None) -> None:
        self.ops = ops
        self.hp = hp = HParams.from_gguf(gguf)
        self.tok_embd = ops.load_embedding(gguf.tensor("token_embd.weight", (hp.n_vocab, hp.n_embd)))
        self.layers = []
        for i in range(hp.n_layer):
            self.layers.append(self._load_layer(gguf, ops, i))
            on_progress((i + 1) / (hp.n_layer + 1))
        self.output_norm = ops.load_vector(gguf.tensor("output_norm.weight", (hp.n_embd,)))
        self.output = ops.load_matrix(gguf.tensor("output.weight", (hp.n_vocab, hp.n_embd)))
        self.yarn = None if hp.yarn is None else ops.load_yarn(hp.yarn, hp.rope_base, hp.head_dim)
        on_progress(1.0)

    def _load_layer(self, gguf: GGUFFile, ops: ModuleType, i: int) -> Layer:
        hp, prefix = self.hp, f"blk.{i}."
        q_rows, kv_rows = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim

        def vector(name: str, size: int) -> Any:
            return ops.load_vector(gguf.tensor(prefix + name, (size,)))

        def matrix(name: str, rows: int, cols: int) -> Any:
            return ops.load_matrix(gguf.tensor(prefix + name, (rows, cols)))

        experts = [gguf.tensor(f"{prefix}ffn_{p}_exps.weight", (hp.n_expert, rows, cols))
                   for p, rows, cols in (("gate", hp.n_ff_exp, hp.n_embd), ("up", hp.n_ff_exp, hp.n_embd),
                                         ("down", hp.n_embd, hp.n_ff_exp))]
        expert_biases = [gguf.tensor(f"{prefix}ffn_{p}_exps.bias", (hp.n_expert, rows))
                         for p, rows in (("gate", hp.n_ff_exp), ("up", hp.n_ff_exp), ("down", hp.n_embd))]
        return Layer(
            attn_norm=vector("attn_norm.weight", hp.n_embd),
            wq=matrix("attn_q.weight", q_rows, hp.n_embd), wk=matrix("attn_k.weight", kv_rows, hp.n_embd),
            wv=matrix("attn_v.weight", kv_rows, hp.n_embd),
            bq=vector("attn_q.bias", q_rows), bk=vector("attn_k.bias", kv_rows), bv=vector("attn_v.bias", kv_rows),
            wo=matrix("attn_output.weight", hp.n_embd, q_rows), bo=vector("attn_output.bias", hp.n_embd),
            sinks=vector("attn_sinks.weight", hp.n_head), sliding_window=self.layer_windows(hp)[i],
            post_attn_norm=vector("post_attention_norm.weight", hp.n_embd),
            w_router=matrix("ffn_gate_inp.weight", hp.n_expert, hp.n_embd),
            b_router=vector("ffn_gate_inp.bias", hp.n_expert),
            experts=ops.load_experts(*experts, *expert_biases),
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
                                      True, yarn=self.yarn, sinks=layer.sinks, window=layer.sliding_window)
            x = ops.matmul(attn, layer.wo, bias=layer.bo, residual=x)
            h = ops.rmsnorm(x, layer.post_attn_norm, hp.eps)
            ids, weights = ops.route(h, layer.w_router, layer.b_router, hp.n_expert_used)
            x = ops.expert_ffn(h, ids, weights, layer.experts, residual=x)
        x = ops.rmsnorm(x if all_logits else ops.last_row(x), self.output_norm, hp.eps)
        logits = ops.to_host(ops.matmul(x, self.output))
        return logits if all_logits else logits[0]
