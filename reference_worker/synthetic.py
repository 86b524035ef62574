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

`--arch gpt-oss` writes llama.cpp's gpt-oss architecture instead (`build_gpt_oss`): MXFP4
experts, Q8_0 dense weights; `--dims gpt-oss-20b` gives it GPT-OSS-20B's exact dimensions
(about 12 GB, random blocks written directly, for the GPU machine).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
import regex
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType, TokenType

from reference_worker.tokenizer import PRE_TOKENIZER_SPLITS, bytes_to_unicode
from reference_worker.tokenizer_hf import FILE_NAME as TOKENIZER_JSON
from reference_worker.tokenizer_hf import write_tokenizer_json

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
    "small": Dims(),
    "phi3-mini": Dims(n_layer=32, n_embd=3072, n_ff=8192, n_head=32, n_head_kv=32, n_ctx=4096, n_spm_pieces=32000),
}


def train_bpe(text: str, n_merges: int, split: regex.Pattern = QWEN2_SPLIT) -> tuple[list[str], list[str]]:
    """Byte-level BPE on text: (tokens, merges). Ties go to the smallest pair, so it is deterministic."""
    alphabet = bytes_to_unicode()
    words = collections.Counter(
        tuple(alphabet[b] for b in piece.group().encode("utf-8")) for piece in split.finditer(text)
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


def write_bpe_tokenizer(writer: gguf.GGUFWriter, pre: str, tokens: list[str], types: list[int], merges: list[str],
                        bos: str, eos: str, pad: str | None = None) -> None:
    """A byte-level BPE vocabulary (tokenizer.ggml.model "gpt2") as llama.cpp's converter writes
    it; bos, eos and pad name tokens of the list. BOS is never added (add_bos_token false)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(bos))
    writer.add_eos_token_id(tokens.index(eos))
    if pad is not None:
        writer.add_pad_token_id(tokens.index(pad))
    writer.add_add_bos_token(False)


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
        types = ([gguf.TokenType.NORMAL] * (n_vocab - len(SPECIAL_TOKENS))
                 + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS))
        write_bpe_tokenizer(writer, "qwen2", tokens, types, merges, bos="<|endoftext|>", eos="<|im_end|>",
                            pad="<|endoftext|>")

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
    n_vocab = len(tokens)

    writer = _new_writer(path, arch, GPT2_ARCHITECTURES, quant, seed, dims)
    writer.add_layer_norm_eps(1e-5)
    write_bpe_tokenizer(writer, "gpt-2", tokens, [gguf.TokenType.NORMAL] * (n_vocab - 1) + [gguf.TokenType.CONTROL],
                        merges, bos="<|endoftext|>", eos="<|endoftext|>")

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


# -- gpt-oss (llama.cpp's "gpt-oss" architecture, src/models/openai-moe.cpp) -----------------

# GPT-OSS's special tokens (the o200k_harmony encoding), in the real vocabulary's order.
GPT_OSS_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
                          "<|start|>", "<|end|>", "<|message|>", "<|call|>")
GPT_OSS_PRE = "gpt-4o"  # llama.cpp's name for the o200k split (LLAMA_VOCAB_PRE_TYPE_GPT4O)


@dataclass(frozen=True)
class GptOssDims:
    """Hyperparameters of a synthetic gpt-oss model. Every row length must be a multiple of 32
    (the MXFP4 and Q8_0 block); n_head * head_dim need not be n_embd, as in the real model."""

    n_layer: int = 3
    n_embd: int = 192
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_expert: int = 4
    n_expert_used: int = 2
    n_ff_exp: int = 128
    n_ctx: int = 512
    sliding_window: int = 8
    rope_base: float = 150000.0
    yarn_factor: float = 32.0
    yarn_orig_ctx: int = 4096
    n_vocab: int | None = None  # None: the trained vocabulary as it comes; else padded to this size
    n_merges: int = 240


# GPT-OSS-20B as llama.cpp reads the official GGUF (convert_hf_to_gguf.py, GptOssModel, from the
# model's config.json): 24 layers of width 2880, 64 query and 8 KV heads of 64, 32 experts of
# width 2880 with 4 active, a window of 128 on every other layer, YaRN x32 over 4096 positions.
GPT_OSS_20B = GptOssDims(n_layer=24, n_embd=2880, n_head=64, n_head_kv=8, head_dim=64, n_expert=32,
                         n_expert_used=4, n_ff_exp=2880, n_ctx=131072, sliding_window=128, n_vocab=201088)
GPT_OSS_DIMS = {"small": GptOssDims(), "gpt-oss-20b": GPT_OSS_20B}


def random_mxfp4_blocks(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """Random MXFP4 rows (ggml block_mxfp4: u8 E8M0 exponent e, 16 bytes of e2m1 nibbles) with
    weights of about std: random codes, exponents drawn around the one that gives std."""
    blocks = rng.integers(0, 256, size=(rows * cols // 32, 17), dtype=np.uint8)
    # A uniformly random e2m1 code has an rms of sqrt(68.5 / 8) (magnitudes 0, 0.5, ..., 6).
    exponent = 127 + np.log2(std / np.sqrt(68.5 / 8))
    blocks[:, 0] = np.clip(np.round(exponent + rng.uniform(-0.5, 0.5, len(blocks))), 1, 254).astype(np.uint8)
    return blocks.reshape(rows, -1)


def random_q8_0_blocks(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """Random Q8_0 rows (fp16 scale d, 32 int8 q) with weights of about std, without quantizing."""
    blocks = np.empty((rows * cols // 32, 34), np.uint8)
    blocks[:, 2:] = rng.integers(-127, 128, size=(len(blocks), 32), dtype=np.int8).view(np.uint8)
    blocks[:, :2] = np.frombuffer(np.float16(std / np.sqrt(127 * 128 / 3)).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


def gpt_oss_vocabulary(n_merges: int, n_vocab: int | None) -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types): byte-level BPE trained on CORPUS, padded with reserved
    tokens to n_vocab, then GPT-OSS's special tokens (control tokens)."""
    tokens, merges = train_bpe(CORPUS, n_merges, regex.compile(PRE_TOKENIZER_SPLITS[GPT_OSS_PRE]))
    n_normal = len(tokens)
    if n_vocab is not None:
        tokens += [f"<|reserved_{i}|>" for i in range(len(tokens), n_vocab - len(GPT_OSS_SPECIAL_TOKENS))]
    types = ([gguf.TokenType.NORMAL] * n_normal + [gguf.TokenType.UNUSED] * (len(tokens) - n_normal)
             + [gguf.TokenType.CONTROL] * len(GPT_OSS_SPECIAL_TOKENS))
    return tokens + list(GPT_OSS_SPECIAL_TOKENS), merges, types


def build_gpt_oss(path: Path | str, seed: int = 0, dims: GptOssDims = GptOssDims(),
                  tokenizer_json: bool = False, drop: tuple[str, ...] = (),
                  reshape: dict[str, tuple[int, ...]] | None = None, metadata: dict[str, int] | None = None) -> Path:
    """Write a synthetic gpt-oss model to path and return the path: MXFP4 experts, Q8_0 dense
    weights, F32 norms, biases, sinks and router (as llama.cpp's quantizer leaves them).
    The tensors are written one at a time, so the 20B's 12 GB never sit in memory at once.
    With tokenizer_json, the vocabulary also goes to a tokenizer.json beside the model (the
    hf-json tokenizer, M0-W-1361), which the worker then loads instead of the GGUF's.

    drop, reshape and metadata make broken files for the loader's tests: tensors left out,
    tensors written with another numpy-order shape, `gpt-oss.*` integer keys overridden.
    """
    rng = np.random.default_rng(seed)
    tokens, merges, types = gpt_oss_vocabulary(dims.n_merges, dims.n_vocab)
    n_vocab, d, ff, n_exp = len(tokens), dims.n_embd, dims.n_ff_exp, dims.n_expert
    q_rows, kv_rows = dims.n_head * dims.head_dim, dims.n_head_kv * dims.head_dim

    writer = gguf.GGUFWriter(str(path), "gpt-oss")
    label = next((name.removeprefix("gpt-oss-") for name, known in GPT_OSS_DIMS.items() if known == dims),
                 f"{dims.n_layer}l-{n_exp}e")
    writer.add_name(f"synthetic-gpt-oss-{label}-seed{seed}")  # the harness knows gpt-oss-20b by its name
    writer.add_file_type(int(LlamaFileType.MOSTLY_MXFP4_MOE))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    hparams = {"block_count": dims.n_layer, "context_length": dims.n_ctx, "embedding_length": d,
               "feed_forward_length": ff, "attention.head_count": dims.n_head,
               "attention.head_count_kv": dims.n_head_kv, "attention.key_length": dims.head_dim,
               "attention.value_length": dims.head_dim, "expert_count": n_exp,
               "expert_used_count": dims.n_expert_used, "expert_feed_forward_length": ff,
               "attention.sliding_window": dims.sliding_window, "rope.scaling.original_context_length":
               dims.yarn_orig_ctx, **(metadata or {})}
    for key, value in hparams.items():
        writer.add_uint32(f"gpt-oss.{key}", value)
    writer.add_float32("gpt-oss.rope.freq_base", dims.rope_base)
    writer.add_float32("gpt-oss.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_string("gpt-oss.rope.scaling.type", "yarn")
    writer.add_float32("gpt-oss.rope.scaling.factor", dims.yarn_factor)
    write_bpe_tokenizer(writer, GPT_OSS_PRE, tokens, types, merges, bos="<|startoftext|>", eos="<|return|>",
                        pad="<|endoftext|>")

    # name -> (numpy-order shape, ggml type, a function that makes the on-disk array)
    tensors: dict[str, tuple[tuple[int, ...], Q, Callable[[], np.ndarray]]] = {}

    def blocks(shape: tuple[int, ...], qtype: Q, std: float) -> Callable[[], np.ndarray]:
        """Makes the on-disk rows of an MXFP4 (experts) or Q8_0 (dense) weight of that shape."""
        random_blocks = random_mxfp4_blocks if qtype == Q.MXFP4 else random_q8_0_blocks
        return lambda: random_blocks(rng, int(np.prod(shape[:-1])), shape[-1], std)

    def weight(name: str, shape: tuple[int, ...], qtype: Q, std: float) -> None:
        tensors[name] = (shape, qtype, blocks(shape, qtype, std))

    def vector(name: str, shape: tuple[int, ...], mean: float, std: float) -> None:
        tensors[name] = (shape, Q.F32, lambda: (mean + rng.standard_normal(shape) * std).astype(np.float32))

    weight("token_embd.weight", (n_vocab, d), Q.Q8_0, 0.5)
    for i in range(dims.n_layer):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", (d,), 1.0, 0.1)
        for proj, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
            weight(f"{b}attn_{proj}.weight", (rows, d), Q.Q8_0, 0.8 / np.sqrt(d))
            vector(f"{b}attn_{proj}.bias", (rows,), 0.0, 0.1)
        weight(b + "attn_output.weight", (d, q_rows), Q.Q8_0, 1.0 / np.sqrt(q_rows))
        vector(b + "attn_output.bias", (d,), 0.0, 0.05)
        vector(b + "attn_sinks.weight", (dims.n_head,), 0.0, 1.0)
        vector(b + "post_attention_norm.weight", (d,), 1.0, 0.1)
        # A decisive router (logits of std ~8): a near-tie between the k-th and the next expert
        # flips under any rounding, llama.cpp's included, and moves the logits by whole units.
        vector(b + "ffn_gate_inp.weight", (n_exp, d), 0.0, 16.0 / np.sqrt(d))
        vector(b + "ffn_gate_inp.bias", (n_exp,), 0.0, 1.0)
        for proj, rows, cols in (("gate", ff, d), ("up", ff, d), ("down", d, ff)):
            weight(f"{b}ffn_{proj}_exps.weight", (n_exp, rows, cols), Q.MXFP4, 0.7 / np.sqrt(cols))
            vector(f"{b}ffn_{proj}_exps.bias", (n_exp, rows), 0.0, 0.1)
    vector("output_norm.weight", (d,), 1.0, 0.1)
    weight("output.weight", (n_vocab, d), Q.Q8_0, 2.0 / np.sqrt(d))

    tensors = {name: spec for name, spec in tensors.items() if name not in drop}
    for name, shape in (reshape or {}).items():
        qtype, std = tensors[name][1], 0.1
        tensors[name] = (shape, qtype, (lambda s=shape: rng.standard_normal(s).astype(np.float32)) if qtype == Q.F32
                         else blocks(shape, qtype, std))
    for name, (shape, qtype, _) in tensors.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) // block_size * type_size,
                               raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, _, make in tensors.values():
        writer.write_tensor_data(make())
    writer.close()
    if tokenizer_json:
        write_tokenizer_json(path, Path(path).parent / TOKENIZER_JSON)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--arch", default="qwen2", choices=ARCHITECTURES + GPT2_ARCHITECTURES + ("gpt-oss",))
    parser.add_argument("--quant", default="Q8_0", choices=QUANT_CHOICES)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--dims", default="small", choices=sorted({*DIMS_PRESETS, *GPT_OSS_DIMS}),
                        help="phi3-mini: Phi-3-Mini's real size (--arch phi3); gpt-oss-20b: GPT-OSS-20B's (gpt-oss)")
    parser.add_argument("--layers", type=int, help="override the layer count of --dims")
    parser.add_argument("--tokenizer-json", action="store_true", help="gpt-oss: also write tokenizer.json beside --out")
    parser.add_argument("--write-spm-vocab", action="store_true",
                        help=f"retrain the SentencePiece vocabulary into {SPM_VOCAB_FILE.name} (needs sentencepiece)")
    args = parser.parse_args(argv)
    if args.write_spm_vocab:
        print(write_spm_vocab_file())
        return 0
    if args.out is None:
        parser.error("--out is required")
    presets = GPT_OSS_DIMS if args.arch == "gpt-oss" else DIMS_PRESETS
    if args.dims not in presets:
        parser.error(f"--dims {args.dims} is not a size of --arch {args.arch}: {', '.join(presets)}")
    dims = presets[args.dims] if args.layers is None else replace(presets[args.dims], n_layer=args.layers)
    if args.arch == "gpt-oss":
        print(build_gpt_oss(args.out, args.seed, dims, args.tokenizer_json))
        return 0
    builder = build_gpt2 if args.arch in GPT2_ARCHITECTURES else build
    print(builder(args.out, arch=args.arch, quant=args.quant, seed=args.seed, dims=dims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
