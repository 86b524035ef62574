"""Synthetic GGUFs: deterministic, every weight type, a tokenizer the gguf-bpe backend reads."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from reference_worker import synthetic
from reference_worker.gguf_file import GGUFFile
from reference_worker.quant import dequantize
from reference_worker.tokenizer import Tokenizer


def test_same_arguments_same_bytes_other_seed_other_weights(tmp_path):
    a = synthetic.build(tmp_path / "a.gguf", seed=1).read_bytes()
    assert a == synthetic.build(tmp_path / "b.gguf", seed=1).read_bytes()
    assert a != synthetic.build(tmp_path / "c.gguf", seed=2).read_bytes()


def test_mixed_model_holds_every_weight_type(synthetic_model):
    types = {t.qtype for t in GGUFFile.open(synthetic_model).tensors.values()}
    assert set(synthetic.WEIGHT_TYPES) <= types


@pytest.mark.parametrize("quant", ["Q4_K", "Q6_K"])
def test_random_k_quant_weights_are_finite_and_scaled(quant):
    rng = np.random.default_rng(0)
    raw = synthetic.random_k_quant_blocks(rng, Q[quant], 64, 512, std=0.05)
    weights = dequantize(raw, Q[quant])
    assert np.isfinite(weights).all()
    assert 0.04 < weights.std() < 0.06 and abs(weights.mean()) < 0.01


def test_styles_differ_as_the_real_architectures_do(synthetic_models):
    qwen2, llama = (GGUFFile.open(synthetic_models(arch)) for arch in ("qwen2", "llama"))
    assert "blk.0.attn_q.bias" in qwen2.tensors and "output.weight" in qwen2.tensors
    assert "blk.0.attn_q.bias" not in llama.tensors and "output.weight" not in llama.tensors


def test_tokenizer_metadata_is_shaped_like_qwen2(synthetic_model):
    meta = GGUFFile.open(synthetic_model).metadata
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "qwen2")
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[-3:] == list(synthetic.SPECIAL_TOKENS) and meta["tokenizer.ggml.token_type"][-3:] == [3, 3, 3]
    assert len(tokens) == len(set(tokens)) and len(meta["tokenizer.ggml.merges"]) == synthetic.Dims.n_merges
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    tokenizer = Tokenizer.from_gguf(GGUFFile.open(synthetic_model))
    text = "<|im_start|>user\nThe quick brown fox, 1234 ü 言語<|im_end|>"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # the merges do merge
    assert tokens.index("<|im_start|>") in ids


@pytest.mark.parametrize("arch, tensor", [("llama", "blk.0.attn_q.weight"), ("gpt", "blk.0.attn_qkv.weight")])
def test_command_line(tmp_path, arch, tensor):
    out = tmp_path / "cli.gguf"
    done = subprocess.run([sys.executable, "-m", "reference_worker.synthetic", "--out", str(out), "--arch", arch,
                           "--quant", "Q4_0", "--seed", "3"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(out)
    model = GGUFFile.open(out)
    assert model.architecture == arch and model.quant_kind == "Q4_0"
    assert model.tensor(tensor).qtype == Q.Q4_0
