"""The hf-json tokenizer (M0-W-1360, M0-W-1361, spec §8.2) and the export of a GGUF vocabulary
as a tokenizer.json.

The hf-json backend loads a Hugging Face `tokenizer.json` with the `tokenizers` library: the
file's own normaliser, pre-tokenizer, BPE model and added tokens encode, and its post-processor
adds BOS/EOS (`encode(..., add_special=True)`). It reads byte-level BPE files, the kind GPT-OSS
ships: every token then stands for fixed bytes, so decoding and UTF-8-safe streaming are the
gguf-bpe backend's (`ByteVocabulary`, `StreamDecoder`, M0-W-1824). BOS, EOS and the
end-of-generation ids come from the GGUF's metadata where it names them, as for gguf-bpe.

A tokenizer.json fits a model when every id it defines is a row of the model's token table
(fewer is fine: tables are often padded, GPT-OSS-20B's 201,088 rows for 200,019 ids) and, where
the GGUF carries its own vocabulary, each of its tokens has the same text there.

`tokenizer_json` / `write_tokenizer_json` go the other way: a GGUF's byte-level BPE vocabulary
as a tokenizer.json that the `tokenizers` library encodes exactly as the gguf-bpe backend does.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gguf import Keys, TokenType
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, processors

from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.tokenizer import (END_OF_GENERATION_TEXTS, EOG_ID_KEYS, ByteVocabulary, Tokenizer,
                                        token_byte_strings)

KIND = "hf-json"
FILE_NAME = "tokenizer.json"  # looked for beside the model (M0-W-1361: "in model directory")


def _load_failed(path: Path, message: str) -> WorkerError:
    return WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"tokenizer.json {str(path)!r}: {message}", {"path": str(path)})


class HFJsonTokenizer(ByteVocabulary):
    """An hf-json tokenizer; make one with `from_file`."""

    kind = KIND

    def __init__(self, hf: _HFTokenizer, token_bytes: list[bytes], bos_id: int | None, eos_id: int | None,
                 eos_ids: frozenset[int]) -> None:
        super().__init__(token_bytes)
        self._hf = hf
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.eos_ids = eos_ids

    @classmethod
    def from_file(cls, path: str | os.PathLike, n_vocab: int, metadata: Mapping[str, Any] | None = None) -> HFJsonTokenizer:
        """Load the tokenizer.json at path for a model whose token table has n_vocab rows;
        metadata (the GGUF's) names BOS/EOS and may carry the model's own vocabulary.

        Raises WorkerError(MODEL_LOAD_FAILED) naming the problem when the file cannot be read,
        does not parse, is not byte-level BPE or does not fit the model.
        """
        path, metadata = Path(path), metadata or {}
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise _load_failed(path, f"cannot be read: {e}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as e:
            raise _load_failed(path, f"is not JSON: {e}") from None
        try:
            hf = _HFTokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception for a schema it does not know
            raise _load_failed(path, f"is not a tokenizer the tokenizers library loads: {e}") from None
        if not (document.get("model") or {}).get("type") == "BPE" or not _is_byte_level(document.get("decoder")):
            raise _load_failed(path, "is not byte-level BPE (a BPE model with a ByteLevel decoder), "
                                     f"the only kind the {KIND} backend reads")

        added = hf.get_added_tokens_decoder()
        texts = {i: text for text, i in hf.get_vocab(with_added_tokens=False).items()}
        texts.update((i, token.content) for i, token in added.items())
        beyond = max(texts, default=-1)
        if beyond >= n_vocab:
            raise _load_failed(path, f"defines token id {beyond} ({texts[beyond]!r}) but the model's token table "
                                     f"has {n_vocab} rows: the vocabulary does not fit the model")
        own = metadata.get(Keys.Tokenizer.LIST)
        if isinstance(own, list):
            differ = [i for i, text in sorted(texts.items()) if i < len(own) and own[i] != text]
            if differ:
                i = differ[0]
                raise _load_failed(path, f"{len(differ)} token(s) differ from the model's own vocabulary, "
                                         f"e.g. id {i} is {texts[i]!r} there but {own[i]!r} in the model")

        kinds = {i: TokenType.CONTROL if i in added else TokenType.NORMAL for i in texts}
        token_bytes = token_byte_strings([texts.get(i, "") for i in range(n_vocab)],
                                         [kinds.get(i, TokenType.UNUSED) for i in range(n_vocab)])

        def token_id(key: str) -> int | None:
            value = metadata.get(key)
            if value is None:
                return None
            if not isinstance(value, int) or value not in texts:
                raise _load_failed(path, f"the model's {key} = {value!r} is not a token of this tokenizer.json")
            return value

        eos_ids = {i for i in map(token_id, EOG_ID_KEYS) if i is not None}
        eos_ids |= {i for i, token in added.items() if token.content in END_OF_GENERATION_TEXTS}
        return cls(hf, token_bytes, token_id(Keys.Tokenizer.BOS_ID), token_id(Keys.Tokenizer.EOS_ID),
                   frozenset(eos_ids))

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of text; special tokens written in the text become their ids.

        add_special runs the tokenizer.json's post-processor, which adds BOS/EOS where it says so.
        """
        return self._hf.encode(text, add_special_tokens=add_special).ids


def _is_byte_level(decoder: Any) -> bool:
    if not isinstance(decoder, dict):
        return False
    if decoder.get("type") == "Sequence":
        return any(map(_is_byte_level, decoder.get("decoders", [])))
    return decoder.get("type") == "ByteLevel"


def tokenizer_json(tokenizer: Tokenizer) -> str:
    """The text of a tokenizer.json that the `tokenizers` library (and `HFJsonTokenizer`)
    encodes exactly as the gguf-bpe `tokenizer` does, BOS/EOS added as its metadata says."""
    hf = _HFTokenizer.from_str(tokenizer.pipeline.to_str())
    specials = [(hf.id_to_token(i), i) for i in (tokenizer.bos_id, tokenizer.eos_id) if i is not None]
    bos = [hf.id_to_token(tokenizer.bos_id)] if tokenizer.add_bos else []
    eos = [hf.id_to_token(tokenizer.eos_id)] if tokenizer.add_eos else []
    hf.post_processor = processors.TemplateProcessing(
        single=[*bos, "$A", *eos], pair=[*bos, "$A", *eos, *bos, "$B", *eos], special_tokens=specials)
    hf.decoder = decoders.ByteLevel()
    return hf.to_str(pretty=False)


def write_tokenizer_json(source: Any, path: str | os.PathLike) -> Path:
    """Write the tokenizer.json of a GGUF's byte-level BPE vocabulary to path and return the path.

    source: a gguf-bpe `Tokenizer`, GGUF metadata (key -> value), a GGUF path or a GGUFFile.
    Raises WorkerError(MODEL_LOAD_FAILED) when the GGUF has no usable gguf-bpe tokenizer.
    """
    if isinstance(source, Mapping):
        source = Tokenizer.from_metadata(source)
    elif not isinstance(source, Tokenizer):
        source = Tokenizer.from_gguf(source)
    path = Path(path)
    path.write_text(tokenizer_json(source), encoding="utf-8")
    return path
