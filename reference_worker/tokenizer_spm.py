"""The GGUF SentencePiece tokenizer (`tokenizer.ggml.model` "llama"): Phi-3's and Llama 2's vocabulary.

Such a file carries pieces, scores and token types but no merge table: `<unk>`, `<s>`, `</s>`, the
256 byte tokens `<0x00>`..`<0xFF>`, word pieces that spell a space as "▁", and added tokens such
as Phi-3's `<|end|>`. The rules follow llama.cpp (llama-vocab.cpp: `tokenizer_st_partition`, the
SPM case of `impl::tokenize`, `llm_tokenizer_spm_session`, `token_to_piece`), which the committed
vectors in tests/goldens/ were made with:
- control, user-defined and unknown tokens are cut out of the text first, the longest text first;
  in a model whose `general.name` says Phi-3, whitespace right after most of them is dropped
  (llama.cpp's RSTRIP attribute for that model);
- each stretch of text between them gets a leading space where `add_space_prefix` holds (the
  default) and it starts the text or follows a special token; spaces become "▁";
- from single characters, the adjacent pair whose joined text is a token with the highest score
  is joined, again and again (the leftmost pair on a tie); a piece left that is no token is
  spelled with byte tokens (byte fallback);
- BOS and EOS are added as `add_bos_token` / `add_eos_token` say (SentencePiece defaults: BOS yes,
  EOS no; ids 1 and 2 unless the file names others).
Decoding renders each token to bytes ("▁" as a space, a byte token as its byte), so the
`StreamDecoder` holds back a character split over byte tokens until it is whole (M0-W-1824).

/health reports the kind "gguf-bpe": the spec knows two tokenizer kinds, the vocabulary embedded
in the GGUF ("gguf-bpe", §8.3) and a tokenizer.json beside it ("hf-json", §8.2; M0-W-1360/1364),
and it files Phi-3's tokenizer under the first (§6.4, "GGUF byte-BPE"). The real Phi-3 file holds
a SentencePiece vocabulary, not byte-level BPE, but it is embedded in the GGUF, which is what the
field tells a client; requirements_map/data/catalog.json notes the mapping.
"""
from __future__ import annotations

import heapq
import math
import re
from collections.abc import Mapping
from typing import Any

from gguf import Keys, TokenType

from reference_worker.tokenizer import END_OF_GENERATION_TEXTS, KIND, ByteVocabulary, _load_failed, special_ids

SPACE_MARK = "\u2581"
BYTE_TOKEN = re.compile(r"<0x([0-9A-F]{2})>")
_C_SPACE = " \t\n\v\f\r"  # what C's isspace() accepts, which llama.cpp strips with
_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
# llama.cpp (llama_vocab::impl::load) strips whitespace after every special token of a model named
# Phi-3 but these, and needs all four in its vocabulary.
PHI3_NAMES = ("phi-3", "phi3")
PHI3_KEEPS_SPACE_AFTER = ("<unk>", "<s>", "<|endoftext|>")
PHI3_REQUIRED = ("<unk>", "<s>", "</s>", "<|endoftext|>")
# SentencePiece defaults where the metadata names no BOS/EOS/UNK (llama-vocab.cpp, "llama" model).
DEFAULT_IDS = {Keys.Tokenizer.BOS_ID: 1, Keys.Tokenizer.EOS_ID: 2, Keys.Tokenizer.UNK_ID: 0}


class SpmTokenizer(ByteVocabulary):
    """A SentencePiece vocabulary from a GGUF; make one with `Tokenizer.from_gguf`."""

    kind = KIND  # see the module docstring

    def __init__(self, tokens: list[str], scores: list[float], token_types: list[TokenType],
                 bos_id: int | None, add_bos: bool, eos_id: int | None, add_eos: bool, eos_ids: frozenset[int],
                 add_space_prefix: bool, strip_after: frozenset[int]) -> None:
        super().__init__([_piece(text, kind) for text, kind in zip(tokens, token_types)])
        self.bos_id, self.add_bos = bos_id, add_bos
        self.eos_id, self.add_eos = eos_id, add_eos
        self.eos_ids = eos_ids
        self.add_space_prefix = add_space_prefix
        self._ids = {text: i for i, text in enumerate(tokens)}
        self._scores = scores
        self._byte_ids = [self._ids[f"<0x{b:02X}>"] for b in range(256)]
        # llama.cpp sorts its special tokens by the length of their UTF-8 text, longest first.
        specials = sorted((i for i, kind in enumerate(token_types) if kind in _SPECIAL_TYPES),
                          key=lambda i: -len(tokens[i].encode("utf-8")))
        self._specials = [(tokens[i], i, i in strip_after) for i in specials]

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SpmTokenizer:
        """Build from GGUF metadata whose tokenizer.ggml.model is "llama".

        Raises WorkerError(MODEL_LOAD_FAILED) naming what is wrong: no scores, a byte token
        missing, a merge table (SentencePiece has none), a repeated token text, an id out of range.
        """
        tokens = metadata.get(Keys.Tokenizer.LIST)
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise _load_failed("tokenizer.ggml.tokens is missing or not a list of non-empty strings")
        n = len(tokens)
        ids = {text: i for i, text in enumerate(tokens)}
        if len(ids) != n:  # llama.cpp asserts on this
            seen: set[str] = set()
            repeated = next(t for t in tokens if t in seen or seen.add(t))
            raise _load_failed(f"token text {repeated!r} appears twice in tokenizer.ggml.tokens")
        if Keys.Tokenizer.MERGES in metadata:
            raise _load_failed("tokenizer.ggml.merges is present, but a SentencePiece ('llama') vocabulary "
                               "merges by score and has no merge table")
        scores = metadata.get(Keys.Tokenizer.SCORES)
        if scores is None:
            raise _load_failed("tokenizer.ggml.scores is missing: a SentencePiece ('llama') vocabulary "
                               "merges by the scores of its pieces")
        if (not isinstance(scores, list) or len(scores) != n
                or not all(isinstance(s, (int, float)) and not math.isnan(s) for s in scores)):
            raise _load_failed(f"tokenizer.ggml.scores must hold {n} numbers")
        kinds = metadata.get(Keys.Tokenizer.TOKEN_TYPE, [TokenType.NORMAL] * n)
        if not isinstance(kinds, list) or len(kinds) != n or not all(k in TokenType._value2member_map_ for k in kinds):
            raise _load_failed(f"tokenizer.ggml.token_type must hold {n} token types")
        # llama.cpp makes end-of-generation texts control tokens even where the file does not.
        kinds = [TokenType.CONTROL if text in END_OF_GENERATION_TEXTS else TokenType(kind)
                 for text, kind in zip(tokens, kinds)]
        missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in ids]
        if missing:
            raise _load_failed(f"byte token {missing[0]} is missing ({len(missing)} of the 256 byte-fallback "
                               f"tokens <0x00>..<0xFF> are)")
        not_bytes = [t for t, kind in zip(tokens, kinds) if kind == TokenType.BYTE and not BYTE_TOKEN.fullmatch(t)]
        if not_bytes:
            raise _load_failed(f"token {not_bytes[0]!r} has the byte type but is not spelled <0xNN>")
        specials = special_ids(metadata, tokens, DEFAULT_IDS, add_bos_default=True)
        strip_after = frozenset()
        name = str(metadata.get(Keys.General.NAME, ""))
        if any(marker in _ascii_lower(name) for marker in PHI3_NAMES):
            absent = [t for t in PHI3_REQUIRED if t not in ids]
            if absent:
                raise _load_failed(f"a Phi-3 model (general.name {name!r}) needs {', '.join(absent)} in its vocabulary")
            strip_after = frozenset(i for i, kind in enumerate(kinds) if kind in _SPECIAL_TYPES or tokens[i] == "</s>")
            strip_after -= {ids[t] for t in PHI3_KEEPS_SPACE_AFTER}
        add_space_prefix = bool(metadata.get(Keys.Tokenizer.ADD_PREFIX, True))
        return cls(tokens, [float(s) for s in scores], kinds, *specials, add_space_prefix, strip_after)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of text; special tokens written in the text become their ids.

        add_special adds BOS and EOS where the model's metadata asks for them, as llama.cpp's
        `add_special` does.
        """
        ids = [self.bos_id] if add_special and self.add_bos else []
        after_special = True  # the start of the text counts as following a special token
        for fragment in self._split_specials(text):
            if isinstance(fragment, int):
                ids.append(fragment)
                after_special = True
                continue
            if self.add_space_prefix and after_special:
                fragment = " " + fragment
            self._merge(fragment.replace(" ", SPACE_MARK), ids)
            after_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    def _split_specials(self, text: str) -> list[str | int]:
        """text as plain stretches (str) and special token ids (int), one special token text at a time."""
        fragments: list[str | int] = [text] if text else []
        for special, token_id, strip_after in self._specials:
            out: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or special not in fragment:
                    out.append(fragment)
                    continue
                start = 0
                while (match := fragment.find(special, start)) >= 0:
                    if match > start:
                        out.append(fragment[start:match])
                    out.append(token_id)
                    start = match + len(special)
                    while strip_after and start < len(fragment) and fragment[start] in _C_SPACE:
                        start += 1
                if start < len(fragment):
                    out.append(fragment[start:])
            fragments = out
        return fragments

    def _merge(self, text: str, ids: list[int]) -> None:
        """Append the ids of one stretch of escaped text: score-driven merges, then byte fallback."""
        pieces = list(text)  # a symbol per character; a merged-away symbol becomes ""
        after = list(range(1, len(pieces) + 1))
        after[-1] = -1
        before = list(range(-1, len(pieces) - 1))
        queue: list[tuple[float, int, int, int]] = []

        def offer(left: int, right: int) -> None:
            if left >= 0 and right >= 0 and (token := self._ids.get(pieces[left] + pieces[right])) is not None:
                # Best score first, then the leftmost pair; the length tells a stale entry.
                heapq.heappush(queue, (-self._scores[token], left, right, len(pieces[left]) + len(pieces[right])))

        for i in range(1, len(pieces)):
            offer(i - 1, i)
        while queue:
            _, left, right, size = heapq.heappop(queue)
            if not pieces[left] or not pieces[right] or len(pieces[left]) + len(pieces[right]) != size:
                continue
            pieces[left] += pieces[right]
            pieces[right] = ""
            after[left] = after[right]
            if after[right] >= 0:
                before[after[right]] = left
            offer(before[left], left)
            offer(left, after[left])
        i = 0
        while i >= 0:
            token = self._ids.get(pieces[i])
            ids.extend([token] if token is not None else (self._byte_ids[b] for b in pieces[i].encode("utf-8")))
            i = after[i]


def _piece(text: str, kind: TokenType) -> bytes:
    """A token's bytes, as llama.cpp's token_to_piece renders it with special=True."""
    if kind in _SPECIAL_TYPES:
        return text.encode("utf-8")
    if kind == TokenType.NORMAL:
        return text.replace(SPACE_MARK, " ").encode("utf-8")
    if kind == TokenType.BYTE:
        return bytes([int(text[3:5], 16)])
    return b""  # unused and undefined tokens render as nothing


def _ascii_lower(text: str) -> str:
    """Lower case as C's tolower does it byte by byte: ASCII letters only."""
    return text.translate({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})
