"""Synthetic llama and phi3 models as llama.cpp's converter writes them: a SentencePiece
vocabulary, Phi-3's metadata, Phi-3-Mini's real size and a Q4_K_M-like mix.

That llama.cpp loads them and agrees with us on them is tests/test_tokenizer_spm.py's and
tests/test_spm_agreement.py's part (goldens made with llama.cpp).
"""
from __future__ import annotations

import json

import pytest
from gguf import GGMLQuantizationType as Q
from gguf import TokenType

from reference_worker import synthetic
from reference_worker.gguf_file import GGUFFile
from reference_worker.tokenizer import Tokenizer

# Phi-3-Mini-4K-Instruct's ids for its chat tokens (its added_tokens.json).
PHI3_IDS = {"<|endoftext|>": 32000, "<|assistant|>": 32001, "<|system|>": 32006, "<|end|>": 32007, "<|user|>": 32010}


def test_the_vocabulary_file_is_what_sentencepiece_trains():
    pytest.importorskip("sentencepiece", reason="the `goldens` extra trains the vocabulary; CI reads the file")
    pieces = json.loads(synthetic.SPM_VOCAB_FILE.read_text(encoding="utf-8"))["pieces"]
    assert [list(p) for p in synthetic.train_spm(synthetic.CORPUS, synthetic.SPM_TRAINED_PIECES)] == pieces


def test_llama_vocabulary_is_sentencepiece_as_trained():
    vocab = synthetic.spm_vocabulary("llama")
    assert vocab.tokens[:3] == ["<unk>", "<s>", "</s>"] and vocab.tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert vocab.types[:4] == [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE]
    assert len(vocab.tokens) == synthetic.SPM_TRAINED_PIECES and vocab.scores[259] > vocab.scores[-1]


@pytest.mark.parametrize("n_pieces, size", [(0, 640), (32000, 32064)])
def test_phi3_vocabulary_has_phi3s_layout(n_pieces, size):
    vocab = synthetic.spm_vocabulary("phi3", n_pieces)
    base = max(n_pieces, synthetic.SPM_TRAINED_PIECES)
    assert len(vocab.tokens) == size and len(set(vocab.tokens)) == size
    assert vocab.tokens[base:base + 11] == list(synthetic.PHI3_ADDED_TOKENS)
    if n_pieces == 32000:
        assert {text: vocab.tokens.index(text) for text in PHI3_IDS} == PHI3_IDS
    assert (vocab.types[vocab.tokens.index("</s>")], vocab.types[0]) == (TokenType.USER_DEFINED, TokenType.CONTROL)
    assert set(vocab.types[base + 11:]) == {TokenType.UNUSED} and vocab.tokens[-1] == f"[PAD{size - 1}]"
    assert vocab.scores[base] == -1000.0 and vocab.scores[-1] == -10000.0


def test_phi3_metadata_is_shaped_like_a_converted_file(synthetic_models):
    meta = GGUFFile.open(synthetic_models("phi3")).metadata
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("llama", "default")
    assert "tokenizer.ggml.merges" not in meta and len(meta["tokenizer.ggml.scores"]) == 640
    tokens = meta["tokenizer.ggml.tokens"]
    assert [tokens[meta[f"tokenizer.ggml.{k}_token_id"]] for k in ("bos", "eos", "unknown", "padding")] == \
        ["<s>", "<|endoftext|>", "<unk>", "<|endoftext|>"]
    assert meta["tokenizer.ggml.add_bos_token"] is True and "<|assistant|>" in meta["tokenizer.chat_template"]
    assert meta["phi3.attention.sliding_window"] == synthetic.Dims.n_ctx // 2 - 1
    assert meta["phi3.rope.dimension_count"] == synthetic.Dims.n_embd // synthetic.Dims.n_head
    assert meta["phi3.rope.freq_base"] == 10000.0
    assert meta["phi3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert GGUFFile.open(synthetic_models("qwen2")).metadata["tokenizer.ggml.model"] == "gpt2"


def test_q4_k_m_gives_more_bits_where_llama_cpp_does():
    more_bits = {i for i in range(32) if synthetic.q4_k_m_type(f"blk.{i}.ffn_down.weight", 32) == Q.Q6_K}
    assert more_bits == {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    assert synthetic.q4_k_m_type("output.weight", 32) == synthetic.q4_k_m_type("blk.5.attn_qkv.weight", 32) == Q.Q6_K
    plain = ("token_embd.weight", "blk.5.ffn_up.weight", "blk.5.attn_output.weight", "blk.5.ffn_down.weight")
    assert {synthetic.q4_k_m_type(name, 32) for name in plain} == {Q.Q4_K}


@pytest.mark.slow
def test_phi3_mini_size_from_the_command_line(tmp_path):
    out = tmp_path / "phi3-mini-1-layer.gguf"
    assert synthetic.main(["--arch", "phi3", "--dims", "phi3-mini", "--quant", "Q4_K_M", "--layers", "1",
                           "--out", str(out)]) == 0
    model = GGUFFile.open(out)
    assert model.quant_kind == "Q4_K_M" and model.metadata["phi3.context_length"] == 4096
    shapes = {name: (t.shape, t.qtype) for name, t in model.tensors.items()}
    assert shapes["token_embd.weight"] == ((32064, 3072), Q.Q4_K) and shapes["output.weight"] == ((32064, 3072), Q.Q6_K)
    assert shapes["blk.0.attn_qkv.weight"] == ((9216, 3072), Q.Q6_K)
    assert shapes["blk.0.ffn_up.weight"] == ((16384, 3072), Q.Q4_K)
    assert shapes["blk.0.ffn_down.weight"] == ((3072, 8192), Q.Q6_K)
    tokenizer = Tokenizer.from_gguf(model)
    assert tokenizer.vocab_size == 32064 and tokenizer.encode("<|user|>", add_special=False) == [32010]
