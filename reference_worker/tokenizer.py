"""The gguf-bpe tokenizer (M0-W-1360, M0-W-1362) and a streaming detokenizer.

Encoding is byte-level BPE built from the GGUF's own vocabulary (`tokenizer.ggml.tokens`,
`token_type`, `merges`) on the maintained `tokenizers` library: special tokens are split out of
the text first, the rest is cut by the model's pre-tokenizer regex, mapped to GPT-2's byte
alphabet and merged by rank. The rules follow llama.cpp (llama-vocab.cpp, unicode.cpp), the
reference the committed vectors in tests/goldens/ were made with: no Unicode normalisation,
control, user-defined and unknown tokens recognised in text, BOS/EOS only where the metadata
asks for them, end-of-generation tokens picked the way llama.cpp picks them. One known gap:
the regex engine knows Unicode 16 and llama.cpp's tables stop at 15.1, so a character first
assigned in Unicode 16 can move a split boundary next to it.

Decoding works on bytes: every token id has a fixed byte string, and the `StreamDecoder` emits
text only once a code point's bytes are complete (M0-W-1362 "UTF-8 Safety"); bytes that can
never complete one are dropped, so a stream carries no U+FFFD that the model did not spell.
"""
from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Mapping
from typing import Any

from gguf import Keys, TokenType
from tokenizers import AddedToken, Regex, models, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer

from reference_worker.errors import ErrorCode, WorkerError

KIND = "gguf-bpe"

# llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 split. The upstream tokenizer.json writes the
# contractions as (?i:'s|'t|...); llama.cpp spells the cases out, which also keeps Unicode case
# folding (e.g. "'ſ") from matching, so we do the same.
_QWEN2_SPLIT = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT4O split (o200k: GPT-4o, gpt-oss). Its regex engine knows
# no \p{Lu}/\p{Ll}, so it rewrites o200k's upper- and lower-case letter classes as "a letter but
# not a-z" and "a letter but not A-Z" (every non-ASCII letter counts as both) and drops \p{M};
# we use its spelling, so a gpt-oss GGUF splits here as it does in llama.cpp.
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> split regex; names as llama.cpp accepts them for the same pre-tokenizer.
PRE_TOKENIZER_SPLITS = {"qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT, "gpt-4o": _GPT4O_SPLIT}
PRE_TOKENIZER_SPLITS["gpt-2"] = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"  # GPT-2

# Token texts llama.cpp treats as end of generation whatever the metadata says, and the FIM
# pad/repo/separator tokens it adds to that set; it also makes them control tokens, so that
# they are recognised in text (llama-vocab.cpp, llama_vocab::impl::load, "special_eog_ids").
END_OF_GENERATION_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
})
EOG_ID_KEYS = (Keys.Tokenizer.EOS_ID, Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID,
                Keys.Tokenizer.FIM_PAD_ID, Keys.Tokenizer.FIM_REP_ID, Keys.Tokenizer.FIM_SEP_ID)


def end_of_generation_ids(texts: Mapping[int, str]) -> frozenset[int]:
    """The end-of-generation ids among candidates (id -> text: the metadata's EOS/EOT/... ids and
    the END_OF_GENERATION_TEXTS tokens). As in llama.cpp, <|end|> is not one where <|call|> (or
    <|calls|>) and <|return|> (or <|flush|>) are: in gpt-oss's harmony format (and solar-open's)
    it closes a message, and the final answer is still to come."""
    present = set(texts.values())
    if "<|end|>" in present and present & {"<|call|>", "<|calls|>"} and present & {"<|return|>", "<|flush|>"}:
        return frozenset(i for i, text in texts.items() if text != "<|end|>")
    return frozenset(texts)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def _load_failed(message: str) -> WorkerError:
    return WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"tokenizer: {message}")


def special_ids(metadata: Mapping[str, Any], tokens: list[str], default_ids: Mapping[str, int] | None = None,
                add_bos_default: bool = False) -> tuple[int | None, bool, int | None, bool, frozenset[int]]:
    """(bos_id, add_bos, eos_id, add_eos, end-of-generation ids) from the tokenizer metadata, as
    llama.cpp reads them; default_ids stand for ids the metadata does not name (where in range).

    Raises WorkerError(MODEL_LOAD_FAILED) for an id out of range, or BOS/EOS asked for but not named.
    """
    n = len(tokens)

    def token_id(key: str) -> int | None:
        value = metadata.get(key)
        if value is None:
            default = (default_ids or {}).get(key)
            return default if default is not None and default < n else None
        if not isinstance(value, int) or not 0 <= value < n:
            raise _load_failed(f"{key} = {value!r} is not a token id below {n}")
        return value

    bos_id, eos_id = token_id(Keys.Tokenizer.BOS_ID), token_id(Keys.Tokenizer.EOS_ID)
    add_bos = bool(metadata.get(Keys.Tokenizer.ADD_BOS, add_bos_default))
    add_eos = bool(metadata.get(Keys.Tokenizer.ADD_EOS, False))
    if (add_bos and bos_id is None) or (add_eos and eos_id is None):
        raise _load_failed("metadata asks to add a BOS/EOS token but names none")
    eos_ids = {i for i in map(token_id, EOG_ID_KEYS) if i is not None}
    eos_ids |= {i for i, text in enumerate(tokens) if text in END_OF_GENERATION_TEXTS}
    return bos_id, add_bos, eos_id, add_eos, end_of_generation_ids({i: tokens[i] for i in eos_ids})


class ByteVocabulary:
    """Decoding, shared by the tokenizer backends: every token id stands for fixed bytes."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.vocab_size = len(token_bytes)
        self._token_bytes = token_bytes

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token_id stands for (a special token: its text; an unused one: nothing)."""
        if not 0 <= token_id < self.vocab_size:
            raise WorkerError(ErrorCode.INVALID_REQUEST,
                              f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return self._token_bytes[token_id]

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of ids; byte sequences that are not UTF-8 become U+FFFD (`errors="ignore"`:
        are dropped, as `StreamDecoder` does)."""
        return b"".join(map(self.token_bytes, ids)).decode("utf-8", errors=errors)


class Tokenizer(ByteVocabulary):
    """A gguf-bpe tokenizer; make one with `from_gguf` or `from_metadata`."""

    kind = KIND

    def __init__(self, tokens: list[str], token_types: list[int], merges: list[str], pre: str,
                 bos_id: int | None, add_bos: bool, eos_id: int | None, add_eos: bool,
                 eos_ids: frozenset[int]) -> None:
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.eos_ids = eos_ids
        special = {TokenType.CONTROL, TokenType.UNKNOWN}
        in_text = special | {TokenType.USER_DEFINED}
        # llama.cpp makes end-of-generation texts control tokens even where the file does not.
        types = [TokenType.CONTROL if text in END_OF_GENERATION_TEXTS else TokenType(kind)
                 for text, kind in zip(tokens, token_types)]
        super().__init__(token_byte_strings(tokens, types))
        self._hf = byte_level_bpe(tokens, merges, PRE_TOKENIZER_SPLITS[pre])
        self._hf.add_tokens([AddedToken(text, special=kind in special, normalized=False)
                             for text, kind in zip(tokens, types) if kind in in_text])

    @classmethod
    def from_gguf(cls, source: Any) -> ByteVocabulary:
        """Build from a GGUF: a path, a `gguf_file.GGUFFile` or a `gguf.GGUFReader`.

        Raises WorkerError(MODEL_LOAD_FAILED) when the file has no usable gguf-bpe tokenizer.
        """
        if isinstance(source, (str, os.PathLike)):
            from reference_worker.gguf_file import GGUFFile
            source = GGUFFile.open(source)
        if hasattr(source, "metadata"):
            return cls.from_metadata(source.metadata)
        return cls.from_metadata({key: field.contents() for key, field in source.fields.items()
                                  if key.startswith("tokenizer.") or key == Keys.General.NAME})

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ByteVocabulary:
        """Build from GGUF metadata (key -> plain Python value); see `from_gguf`.

        The file's tokenizer.ggml.model picks the backend: "gpt2" byte-level BPE (this class),
        "llama" SentencePiece (tokenizer_spm.SpmTokenizer, which needs general.name too).
        """
        model = metadata.get(Keys.Tokenizer.MODEL)
        if model == "llama":
            from reference_worker.tokenizer_spm import SpmTokenizer  # it builds on this module
            return SpmTokenizer.from_metadata(metadata)
        if model != "gpt2":
            raise _load_failed(f"tokenizer.ggml.model {model!r} is neither byte-level BPE ('gpt2') nor "
                               f"SentencePiece ('llama'), the models the {KIND} backend reads")
        pre = metadata.get(Keys.Tokenizer.PRE)
        if pre not in PRE_TOKENIZER_SPLITS:
            raise _load_failed(f"pre-tokenizer {pre!r} is not supported; supported: {sorted(PRE_TOKENIZER_SPLITS)}")
        tokens = metadata.get(Keys.Tokenizer.LIST)
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise _load_failed("tokenizer.ggml.tokens is missing or not a list of strings")
        n = len(tokens)
        token_types = metadata.get(Keys.Tokenizer.TOKEN_TYPE, [TokenType.NORMAL] * n)
        if (not isinstance(token_types, list) or len(token_types) != n
                or not all(t in TokenType._value2member_map_ for t in token_types)):
            raise _load_failed(f"tokenizer.ggml.token_type must hold {n} token types")
        merges = metadata.get(Keys.Tokenizer.MERGES, [])
        if not isinstance(merges, list) or not all(isinstance(m, str) and m.find(" ", 1) > 0 for m in merges):
            raise _load_failed("tokenizer.ggml.merges must be a list of 'left right' strings")
        return cls(tokens, token_types, merges, pre, *special_ids(metadata, tokens))

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of text; special tokens written in the text become their ids.

        add_special adds BOS and EOS where the model's metadata asks for them
        (tokenizer.ggml.add_bos_token / add_eos_token), as llama.cpp's `add_special` does.
        """
        ids = self._hf.encode(text, add_special_tokens=False).ids
        if add_special and self.add_bos:
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    @property
    def pipeline(self) -> _HFTokenizer:
        """The `tokenizers` pipeline that encodes text, without BOS/EOS (tokenizer_hf exports it)."""
        return self._hf


class StreamDecoder:
    """Turns generated token ids into text pieces that only ever hold complete UTF-8.

    A code point split across tokens is held back until its last byte arrives; a byte that
    cannot belong to any code point is dropped as soon as it is seen to be one, and so is a
    code point still incomplete when generation ends (nothing is flushed). The pieces joined
    equal `tokenizer.decode(ids, errors="ignore")` but for such a last incomplete code point.
    """

    def __init__(self, tokenizer: ByteVocabulary) -> None:
        self._tokenizer = tokenizer
        # M0-W-1362/M0-W-1824: never emit invalid UTF-8 or a U+FFFD the model did not produce: drop what cannot decode.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")

    def push(self, token_id: int) -> str:
        """The text that token_id completes; "" while a code point is still incomplete."""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    @property
    def pending(self) -> bytes:
        """The bytes held back (at most 3): the start of a code point still to come, or of a
        surrogate (ED A0-BF), which the next byte drops."""
        return self._utf8.getstate()[0]


def token_byte_strings(tokens: list[str], types: list[TokenType]) -> list[bytes]:
    """Each token's bytes, as llama.cpp's token_to_piece renders it with special=True."""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

    def normal(text: str) -> bytes:
        if all(char in byte_of for char in text):
            return bytes(byte_of[char] for char in text)
        return text.encode("utf-8")  # not in the byte alphabet: the vocabulary means it literally

    return [normal(text) if kind == TokenType.NORMAL else b"" if kind == TokenType.UNUSED
            else text.encode("utf-8") for text, kind in zip(tokens, types)]


def byte_level_bpe(tokens: list[str], merges: list[str], split: str, ignore_merges: bool = False) -> _HFTokenizer:
    """The `tokenizers` pipeline: split regex, then bytes -> GPT-2 alphabet, then BPE merges
    (ignore_merges: a piece that is a token as a whole is taken as it is, tiktoken's rule)."""
    vocab = {text: i for i, text in enumerate(tokens)}  # a repeated text keeps its last id, as in llama.cpp
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)
        pairs.append((merge[:cut], merge[cut + 1:]))
    try:
        hf = _HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False,
                                       ignore_merges=ignore_merges))
    except Exception as e:  # tokenizers raises a bare Exception for merges outside the vocabulary
        raise _load_failed(f"merges do not fit the vocabulary: {e}") from None
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    return hf
