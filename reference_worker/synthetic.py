"""Small synthetic GGUF models for fast tests, fuzzing and GPU runs.

A synthetic model has the real model's shape of metadata and tensors (qwen2, llama or phi3
style; `build_gpt2`: GPT-2 style), random weights drawn from a seed, and a small vocabulary
trained on a fixed paragraph: byte-level BPE with the qwen2 special tokens for qwen2 (GPT-2's for
gpt2); for llama and phi3 a SentencePiece one (reference_worker/data/synthetic_spm_vocab.json,
trained by `train_spm`), laid out as llama.cpp's converter writes Llama 2's and Phi-3's. Same
arguments, same bytes.

    python -m reference_worker.synthetic --out tiny.gguf --arch qwen2 --quant Q8_0 --seed 0
    python -m reference_worker.synthetic --out gpt2.gguf --arch gpt2 --quant mixed
    python -m reference_worker.synthetic --out phi3.gguf --arch phi3 --dims phi3-mini --quant Q4_K_M
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
import regex
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType, TokenType

from reference_worker.tokenizer import PRE_TOKENIZER_SPLITS, bytes_to_unicode

# Weight types a synthetic model can be written in; "mixed" cycles through all of them.
WEIGHT_TYPES = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q5_0, Q.Q4_0, Q.Q4_K, Q.Q6_K, Q.MXFP4)
QUANT_CHOICES = tuple(t.name for t in WEIGHT_TYPES) + ("mixed", "Q4_K_M")
_FILE_TYPE = {
    Q.F32: LlamaFileType.ALL_F32, Q.F16: LlamaFileType.MOSTLY_F16, Q.BF16: LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: LlamaFileType.MOSTLY_Q8_0, Q.Q5_0: LlamaFileType.MOSTLY_Q5_0, Q.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_K: LlamaFileType.MOSTLY_Q4_K_M, Q.Q6_K: LlamaFileType.MOSTLY_Q6_K, Q.MXFP4: LlamaFileType.MOSTLY_MXFP4_MOE,
}
ARCHITECTURES = ("qwen2", "llama", "phi3")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SPM_ARCHITECTURES = ("llama", "phi3")  # the others keep the byte-level BPE vocabulary
SPM_VOCAB_FILE = Path(__file__).parent / "data" / "synthetic_spm_vocab.json"
SPM_TRAINED_PIECES = 600
# Phi-3-Mini's added tokens, which follow Llama 2's pieces (its added_tokens.json, all "special").
PHI3_ADDED_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
                     "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>")
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# The tokenizer's own qwen2 pre-tokenizer split trains the merges.
QWEN2_SPLIT = regex.compile(PRE_TOKENIZER_SPLITS["qwen2"])
CORPUS = """\
The quick brown fox jumps over the lazy dog. A GPU computes many small things at the same time,
and a worker streams the tokens it samples back to the caller, one event at a time.
def forward(self, tokens):
    return self.output(self.norm(self.layers(self.embed(tokens))))
Les modèles de langue prédisent le mot suivant. 言語モデルは次の単語を予測します。 1234567890
Write a haiku about GPU computing: silicon rivers, threads that hum in parallel, the kernel returns.
"""


@dataclass(frozen=True)
class Dims:
    """Hyperparameters of a synthetic model; K-quants need rows that are multiples of 256."""

    n_layer: int = 2
    n_embd: int = 256
    n_ff: int = 512
    n_head: int = 4
    n_head_kv: int = 2
    n_ctx: int = 512
    n_merges: int = 240
    n_spm_pieces: int = 0  # SentencePiece pieces before the added tokens; 0: just the trained ones


# Phi-3-Mini-4K-Instruct as its GGUF declares it; Llama 2's 32,000 pieces are the trained ones plus fillers.
DIMS_PRESETS = {
    "tiny": Dims(),
    "phi3-mini": Dims(n_layer=32, n_embd=3072, n_ff=8192, n_head=32, n_head_kv=32, n_ctx=4096, n_spm_pieces=32000),
}


def train_bpe(text: str, n_merges: int) -> tuple[list[str], list[str]]:
    """Byte-level BPE on text: (tokens, merges). Ties go to the smallest pair, so it is deterministic."""
    alphabet = bytes_to_unicode()
    words = collections.Counter(
        tuple(alphabet[b] for b in piece.encode("utf-8")) for piece in QWEN2_SPLIT.findall(text)
    )
    tokens = list(alphabet.values())
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(f"{best[0]} {best[1]}")
        if best[0] + best[1] not in tokens:  # two merge paths can spell the same token
            tokens.append(best[0] + best[1])
        words = collections.Counter({_merge_pair(word, best): count for word, count in words.items()})
    return tokens, merges


def train_spm(text: str, vocab_size: int) -> list[tuple[str, float, int]]:
    """A SentencePiece BPE vocabulary trained on text's lines with Llama 2's options (byte
    fallback, digits split, a dummy prefix, no normalisation): (piece, score, GGUF token type)
    per id, the types as llama.cpp's converter reads them from a tokenizer.model. Deterministic."""
    import sentencepiece  # the `goldens` extra: only regenerating SPM_VOCAB_FILE needs it

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        num_threads=1, minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())

    def token_type(i: int) -> TokenType:
        for test, kind in ((sp.IsUnknown, TokenType.UNKNOWN), (sp.IsControl, TokenType.CONTROL),
                           (sp.IsUnused, TokenType.UNUSED), (sp.IsByte, TokenType.BYTE)):
            if test(i):
                return kind
        return TokenType.NORMAL

    return [(sp.IdToPiece(i), sp.GetScore(i), int(token_type(i))) for i in range(sp.vocab_size())]


def write_spm_vocab_file(path: Path = SPM_VOCAB_FILE) -> Path:
    """Train the synthetic SentencePiece vocabulary on CORPUS and write it to path (JSON)."""
    import sentencepiece

    pieces = train_spm(CORPUS, SPM_TRAINED_PIECES)
    doc = {"made_by": "python -m reference_worker.synthetic --write-spm-vocab",
           "sentencepiece": sentencepiece.__version__, "pieces": []}
    rows = ",\n".join(json.dumps(piece, ensure_ascii=False) for piece in pieces)  # one piece a line
    path.write_text(json.dumps(doc, ensure_ascii=False).replace('"pieces": []', f'"pieces": [\n{rows}\n]') + "\n",
                    encoding="utf-8")
    return path


@dataclass(frozen=True)
class SpmVocabulary:
    """Token texts, scores and types of a SentencePiece vocabulary, as a converted GGUF holds them."""

    tokens: list[str]
    scores: list[float]
    types: list[int]


def spm_vocabulary(arch: str, n_pieces: int = 0) -> SpmVocabulary:
    """The synthetic SentencePiece vocabulary of arch ("llama" or "phi3"), laid out as llama.cpp's
    converter writes Llama 2's and Phi-3's.

    The trained pieces come first (<unk>, <s>, </s>, <0x00>..<0xFF>, word pieces), then filler
    pieces up to n_pieces. phi3 then has Phi-3's added tokens and the converter's changes: ids its
    tokenizer_config lists get score -1000 and the type it gives them (</s> is not "special" there,
    so it is user-defined, and <unk> a control token), and unused [PADn] tokens fill the vocabulary
    up to a multiple of 64 (Phi-3-Mini: 32,011 -> 32,064).
    """
    pieces = json.loads(SPM_VOCAB_FILE.read_text(encoding="utf-8"))["pieces"]
    tokens, scores, types = (list(column) for column in zip(*pieces))
    for i in range(len(tokens), n_pieces):
        tokens.append(f"\u2581x{i}")
        scores.append(scores[-1] - 1.0)
        types.append(int(TokenType.NORMAL))
    if arch == "phi3":
        for text, kind in (("<unk>", TokenType.CONTROL), ("<s>", TokenType.CONTROL), ("</s>", TokenType.USER_DEFINED)):
            scores[tokens.index(text)], types[tokens.index(text)] = -1000.0, int(kind)
        tokens += PHI3_ADDED_TOKENS
        scores += [-1000.0] * len(PHI3_ADDED_TOKENS)
        types += [int(TokenType.CONTROL)] * len(PHI3_ADDED_TOKENS)
        n_pad = -len(tokens) % 64
        tokens += [f"[PAD{i}]" for i in range(len(tokens), len(tokens) + n_pad)]
        scores += [-10000.0] * n_pad
        types += [int(TokenType.UNUSED)] * n_pad
    return SpmVocabulary(tokens, scores, types)


def write_spm_tokenizer(writer: gguf.GGUFWriter, arch: str, vocab: SpmVocabulary) -> None:
    """The tokenizer.* metadata of a converted Llama 2 (arch "llama") or Phi-3 ("phi3") GGUF."""
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.tokens.index("<s>"))
    writer.add_unk_token_id(vocab.tokens.index("<unk>"))
    if arch == "phi3":
        writer.add_eos_token_id(vocab.tokens.index("<|endoftext|>"))
        writer.add_pad_token_id(vocab.tokens.index("<|endoftext|>"))
        writer.add_chat_template(PHI3_CHAT_TEMPLATE)
    else:
        writer.add_eos_token_id(vocab.tokens.index("</s>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def q4_k_m_type(name: str, n_layer: int) -> Q:
    """The type llama.cpp's Q4_K_M gives a tensor (llama-quant.cpp), within what our kernels have:
    Q6_K for the output head and for ffn_down in the layers `use_more_bits` picks (the first and
    last eighth, every third between), Q4_K elsewhere. attn_qkv, Q5_K there, is Q6_K here."""
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    more_bits = layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2
    if name == "output.weight" or "attn_qkv" in name or ("ffn_down" in name and more_bits):
        return Q.Q6_K
    return Q.Q4_K


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def pack_q4_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Pack (n, 8) 6-bit scales and mins into Q4_K's 12 bytes (the inverse of get_scale_min_k4)."""
    packed = np.zeros((len(sc), 12), np.uint8)
    packed[:, 0:4] = sc[:, :4] | (sc[:, 4:] >> 4) << 6
    packed[:, 4:8] = m[:, :4] | (m[:, 4:] >> 4) << 6
    packed[:, 8:12] = (sc[:, 4:] & 15) | (m[:, 4:] & 15) << 4
    return packed


STD_SAMPLE_BLOCKS = 8192


def random_k_quant_blocks(rng: np.random.Generator, qtype: Q, rows: int, cols: int, std: float) -> np.ndarray:
    """Random Q4_K/Q6_K rows whose fp16 scale fields are finite and set so the weights have ~std."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_size, type_size), dtype=np.uint8)
    sample = blocks[:STD_SAMPLE_BLOCKS]  # enough to measure the std; dequantizing a 3B model is not fast
    # Scale fields (ggml-common.h): Q4_K starts with fp16 d and dmin; Q6_K ends with fp16 d.
    if qtype == Q.Q4_K:
        # Mins that cancel the mean of the 4-bit codes (7.5 * sc, with dmin = 8 d), so rows are
        # near zero-mean like trained weights instead of carrying a large common offset.
        sc = rng.integers(1, 64, size=(len(blocks), 8), dtype=np.uint8)
        blocks[:, 4:16] = pack_q4_k_scales(sc, np.round(sc * (7.5 / 8)).astype(np.uint8))
        scale_fields = [(slice(0, 2), 1.0), (slice(2, 4), 8.0)]
    else:
        scale_fields = [(slice(type_size - 2, type_size), 1.0)]
    for field, ratio in scale_fields:
        blocks[:, field] = np.frombuffer(np.float16(ratio).tobytes(), np.uint8)
    unit_std = float(gguf.quants.dequantize(sample, qtype).std())
    for field, ratio in scale_fields:
        blocks[:, field] = np.frombuffer(np.float16(ratio * std / unit_std).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


def encode_weight(rng: np.random.Generator, qtype: Q, rows: int, cols: int, std: float) -> np.ndarray:
    """A (rows, cols) weight matrix with the given std, in qtype's on-disk form."""
    if qtype in (Q.Q4_K, Q.Q6_K):
        return random_k_quant_blocks(rng, qtype, rows, cols, std)
    values = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)


def _weight_writer(writer: gguf.GGUFWriter, rng: np.random.Generator, quant: str, n_layer: int):
    """weight(name, rows, cols, std): add a random matrix to writer in quant's type ("mixed":
    the next of WEIGHT_TYPES, in turn; "Q4_K_M": `q4_k_m_type`), Q8_0 where a K-quant does not
    fit the row length."""
    weight_types = iter(WEIGHT_TYPES * (8 * n_layer)) if quant == "mixed" else None

    def weight(name: str, rows: int, cols: int, std: float) -> None:
        if quant == "Q4_K_M":
            qtype = q4_k_m_type(name, n_layer)
        else:
            qtype = next(weight_types) if weight_types else Q[quant]
        if qtype in (Q.Q4_K, Q.Q6_K) and cols % 256:
            qtype = Q.Q8_0
        data = encode_weight(rng, qtype, rows, cols, std)
        writer.add_tensor(name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)

    return weight


def _new_writer(path: Path | str, arch: str, architectures: tuple[str, ...], quant: str, seed: int,
                dims: Dims) -> gguf.GGUFWriter:
    """A GGUF writer for arch (one of the builder's architectures) with what every synthetic
    model's metadata starts with: its name, file type, and the dimensions that every
    architecture names alike. ValueError for an arch or quant the builder does not make."""
    if arch not in architectures:
        raise ValueError(f"arch must be one of {architectures}, not {arch!r}")
    if quant not in QUANT_CHOICES:
        raise ValueError(f"quant must be one of {QUANT_CHOICES}, not {quant!r}")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"synthetic-{arch}-{quant.lower()}-seed{seed}")
    mix = quant in ("mixed", "Q4_K_M")
    writer.add_file_type(int(LlamaFileType.MOSTLY_Q4_K_M if mix else _FILE_TYPE[Q[quant]]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(dims.n_layer)
    writer.add_context_length(dims.n_ctx)
    writer.add_embedding_length(dims.n_embd)
    writer.add_feed_forward_length(dims.n_ff)
    writer.add_head_count(dims.n_head)
    return writer


def _finish(writer: gguf.GGUFWriter, path: Path | str) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def build(path: Path | str, arch: str = "qwen2", quant: str = "Q8_0", seed: int = 0, dims: Dims = Dims()) -> Path:
    """Write a synthetic model to path and return the path.

    arch "qwen2" has QKV biases and an untied output head; "llama" has neither (tied head);
    "phi3" has an untied head and fused weights (attn_qkv, and ffn_up holding gate then up).
    quant names the type of every weight matrix, "mixed" to cycle through WEIGHT_TYPES, or
    "Q4_K_M" for llama.cpp's mix of that name (`q4_k_m_type`).
    """
    rng = np.random.default_rng(seed)
    if arch in SPM_ARCHITECTURES:
        spm = spm_vocabulary(arch, dims.n_spm_pieces)
        tokens = spm.tokens
    else:
        tokens, merges = train_bpe(CORPUS, dims.n_merges)
        tokens += SPECIAL_TOKENS
    n_vocab = len(tokens)
    head_dim = dims.n_embd // dims.n_head

    writer = _new_writer(path, arch, ARCHITECTURES, quant, seed, dims)
    writer.add_head_count_kv(dims.n_head_kv)
    writer.add_rope_freq_base(1000000.0 if arch == "qwen2" else 10000.0)
    writer.add_layer_norm_rms_eps(1e-6 if arch == "qwen2" else 1e-5)
    if arch == "phi3":
        # Phi-3 declares a 2047-token window in 4096; llama.cpp reads it and turns it off
        # (models/phi3.cpp: "Phi SWA is currently disabled"), and so does llama.py.
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_scaling_orig_ctx_len(dims.n_ctx)
        writer.add_sliding_window(dims.n_ctx // 2 - 1)
    if arch in SPM_ARCHITECTURES:
        write_spm_tokenizer(writer, arch, spm)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.NORMAL] * (n_vocab - len(SPECIAL_TOKENS))
                               + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS))
        writer.add_token_merges(merges)
        writer.add_eos_token_id(tokens.index("<|im_end|>"))
        writer.add_bos_token_id(tokens.index("<|endoftext|>"))
        writer.add_pad_token_id(tokens.index("<|endoftext|>"))
        writer.add_add_bos_token(False)

    weight = _weight_writer(writer, rng, quant, dims.n_layer)

    def vector(name: str, size: int, mean: float, std: float) -> None:
        writer.add_tensor(name, (mean + rng.standard_normal(size) * std).astype(np.float32))

    # Small embeddings let the layers, not the last input token, dominate the residual stream,
    # so a tied head does not just repeat its input.
    weight("token_embd.weight", n_vocab, dims.n_embd, 2.0 / np.sqrt(dims.n_embd))
    for i in range(dims.n_layer):
        vector(f"blk.{i}.attn_norm.weight", dims.n_embd, 1.0, 0.1)
        kv_rows = dims.n_head_kv * head_dim
        if arch == "phi3":
            weight(f"blk.{i}.attn_qkv.weight", dims.n_embd + 2 * kv_rows, dims.n_embd, 1.5 / np.sqrt(dims.n_embd))
        for proj, rows in (("q", dims.n_embd), ("k", kv_rows), ("v", kv_rows)) if arch != "phi3" else ():
            weight(f"blk.{i}.attn_{proj}.weight", rows, dims.n_embd, 1.5 / np.sqrt(dims.n_embd))
            if arch == "qwen2":
                vector(f"blk.{i}.attn_{proj}.bias", rows, 0.0, 0.1)
        weight(f"blk.{i}.attn_output.weight", dims.n_embd, dims.n_embd, 1.0 / np.sqrt(dims.n_embd))
        vector(f"blk.{i}.ffn_norm.weight", dims.n_embd, 1.0, 0.1)
        if arch == "phi3":
            weight(f"blk.{i}.ffn_up.weight", 2 * dims.n_ff, dims.n_embd, 1.0 / np.sqrt(dims.n_embd))
        else:
            weight(f"blk.{i}.ffn_gate.weight", dims.n_ff, dims.n_embd, 1.0 / np.sqrt(dims.n_embd))
            weight(f"blk.{i}.ffn_up.weight", dims.n_ff, dims.n_embd, 1.0 / np.sqrt(dims.n_embd))
        weight(f"blk.{i}.ffn_down.weight", dims.n_embd, dims.n_ff, 1.0 / np.sqrt(dims.n_ff))
    vector("output_norm.weight", dims.n_embd, 1.0, 0.1)
    if arch != "llama":
        weight("output.weight", n_vocab, dims.n_embd, 2.0 / np.sqrt(dims.n_embd))
    return _finish(writer, path)


GPT2_ARCHITECTURES = ("gpt2", "gpt")  # "gpt": the spec's alias (M0-W-1212), unknown to llama.cpp


def build_gpt2(path: Path | str, quant: str = "Q8_0", seed: int = 0, dims: Dims = Dims(), arch: str = "gpt2",
               tied_head: bool = True) -> Path:
    """Write a synthetic GPT-2-style model to path, shaped like llama.cpp's converted GPT-2 files
    (src/models/gpt2.cpp: LayerNorms with biases, fused attn_qkv, biases everywhere, a learned
    position table of n_ctx rows kept in F32 as llama-quantize keeps it) and return the path.

    Every head has its own K/V (dims.n_head_kv is not used); the head is the token table unless
    tied_head is False; quant as in `build`. The vocabulary is `build`'s BPE with GPT-2's
    pre-tokenizer and its one special token, <|endoftext|>.
    """
    rng = np.random.default_rng(seed)
    tokens, merges = train_bpe(CORPUS, dims.n_merges)
    tokens.append("<|endoftext|>")
    n_vocab, end_of_text = len(tokens), len(tokens) - 1

    writer = _new_writer(path, arch, GPT2_ARCHITECTURES, quant, seed, dims)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * end_of_text + [gguf.TokenType.CONTROL])
    writer.add_token_merges(merges)
    for add_id in (writer.add_bos_token_id, writer.add_eos_token_id):
        add_id(end_of_text)
    writer.add_add_bos_token(False)

    weight = _weight_writer(writer, rng, quant, dims.n_layer)

    def norm(name: str, size: int) -> None:
        writer.add_tensor(f"{name}.weight", (1.0 + rng.standard_normal(size) * 0.1).astype(np.float32))
        writer.add_tensor(f"{name}.bias", (rng.standard_normal(size) * 0.1).astype(np.float32))

    def bias(name: str, size: int) -> None:
        writer.add_tensor(f"{name}.bias", (rng.standard_normal(size) * 0.05).astype(np.float32))

    d, ff = dims.n_embd, dims.n_ff
    weight("token_embd.weight", n_vocab, d, 2.0 / np.sqrt(d))
    writer.add_tensor("position_embd.weight", encode_weight(rng, Q.F32, dims.n_ctx, d, 1.0 / np.sqrt(d)))
    for i in range(dims.n_layer):
        norm(f"blk.{i}.attn_norm", d)
        weight(f"blk.{i}.attn_qkv.weight", 3 * d, d, 1.5 / np.sqrt(d))
        bias(f"blk.{i}.attn_qkv", 3 * d)
        weight(f"blk.{i}.attn_output.weight", d, d, 1.0 / np.sqrt(d))
        bias(f"blk.{i}.attn_output", d)
        norm(f"blk.{i}.ffn_norm", d)
        weight(f"blk.{i}.ffn_up.weight", ff, d, 1.0 / np.sqrt(d))
        bias(f"blk.{i}.ffn_up", ff)
        weight(f"blk.{i}.ffn_down.weight", d, ff, 1.0 / np.sqrt(ff))
        bias(f"blk.{i}.ffn_down", d)
    norm("output_norm", d)
    if not tied_head:
        weight("output.weight", n_vocab, d, 2.0 / np.sqrt(d))
    return _finish(writer, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--arch", default="qwen2", choices=ARCHITECTURES + GPT2_ARCHITECTURES)
    parser.add_argument("--quant", default="Q8_0", choices=QUANT_CHOICES)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--dims", default="tiny", choices=DIMS_PRESETS, help="phi3-mini: Phi-3-Mini's real size")
    parser.add_argument("--layers", type=int, help="override the preset's layer count")
    parser.add_argument("--write-spm-vocab", action="store_true",
                        help=f"retrain the SentencePiece vocabulary into {SPM_VOCAB_FILE.name} (needs sentencepiece)")
    args = parser.parse_args(argv)
    if args.write_spm_vocab:
        print(write_spm_vocab_file())
        return 0
    if args.out is None:
        parser.error("--out is required")
    dims = DIMS_PRESETS[args.dims]
    if args.layers is not None:
        dims = replace(dims, n_layer=args.layers)
    builder = build_gpt2 if args.arch in GPT2_ARCHITECTURES else build
    print(builder(args.out, arch=args.arch, quant=args.quant, seed=args.seed, dims=dims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
