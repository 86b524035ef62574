"""Regenerate tests/goldens/spm_goldens.json: llama.cpp on the synthetic llama and phi3 models.

Both carry a SentencePiece vocabulary (tokenizer.ggml.model "llama"). They are built here by
reference_worker.synthetic (every weight type, seed 0) and rebuilt byte for byte by the tests,
which check the sha256 recorded here. For each model llama.cpp (llama-cpp-python, the `goldens`
extra, CPU) gives:
- its view of the vocabulary: size, BOS id and add_bos, every end-of-generation id, and every
  token's piece (`llama_token_to_piece(special=True)`, hex: byte tokens are not UTF-8);
- `ids`: the ids of each text of `corpus`, `llama_tokenize(add_special=True, parse_special=True)`;
- `sequences`: teacher-forced rows as in logit_goldens.json (top-1 and top-2 ids, their margin
  and the top-1 logit after each prefix) over a few texts, one longer than phi3's declared
  sliding window.
tests/test_tokenizer_spm.py and tests/test_spm_agreement.py check the worker against them.

    python tests/goldens/make_spm_goldens.py [--out PATH]
"""
from __future__ import annotations

import argparse
import ctypes
import random
import sys
import tempfile
from pathlib import Path

from goldens_common import load_llama, provenance, write_json
from make_logit_goldens import PROMPTS, teacher_forced
from make_tokenizer_vectors import POOLS, SEPARATORS

from reference_worker import synthetic

ARCHES = ("llama", "phi3")
QUANT, SEED = "mixed", 0
SEQUENCE_TOKENS = 64
LONG_TOKENS = 320  # past phi3's declared window (n_ctx // 2 - 1 = 255), which llama.cpp does not apply
CORPUS_SEED = 1824
SPM_SPECIAL = [
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "</s>   after", "</s>\n\nnext", " <unk> x", "<s> <s>",
    "<|user|>\nWhat is 2 + 2?<|end|>\n<|assistant|>\n4<|end|>", "<|system|>  \t You are helpful.<|end|>\n",
    "text<|endoftext|>  more", "<|endoftext|>\n<|endoftext|>", "<|placeholder1|>x<|placeholder6|> ",
    "<|user|>", "<|user", "|user|>", "<|USER|>", "< |end| >", "[PAD620]", "<0x41>", "<0xE6><0x97><0xA5>",
    "\u2581literal mark", "\u2581\u2581 two marks", "日本語", "言語モデル", "\u2581日",
]
SPACES = ["a", " a", "  a", "   a", "a ", "a  ", " ", "  ", "    ", "\n a", "a\n\n\n b", "\t\ta", " \n ", "x    y"]


def corpus() -> list[tuple[str, str]]:
    """(category, text), each text once: the tokenizer corpus's fragments, SentencePiece specials
    and space runs, then seeded mixtures of them."""
    pools = {**POOLS, "spm-special": SPM_SPECIAL, "spaces": SPACES}
    rng = random.Random(CORPUS_SEED)
    items = [(name, text) for name, pool in pools.items() for text in pool]
    for _ in range(60):
        parts = [rng.choice(rng.choice(list(pools.values()))) + rng.choice(SEPARATORS)
                 for _ in range(rng.randint(2, 4))]
        items.append(("mixed", "".join(parts)))
    unique = {}
    for category, text in items:
        unique.setdefault(text, category)
    return [(category, text) for text, category in unique.items()]


def piece(vocab, token_id: int) -> bytes:
    """llama.cpp's rendering of one token with special tokens shown (no leading space stripped)."""
    import llama_cpp

    buffer = (ctypes.c_char * 256)()
    n = llama_cpp.llama_token_to_piece(vocab, token_id, buffer, len(buffer), 0, True)
    return bytes(buffer[:n])


def rows(llm, ids: list[int]) -> dict:
    """Teacher-forced rows, kept small: top-1 and top-2 ids, their margin and the top-1 logit."""
    full = teacher_forced(llm, ids)
    return {"ids": ids, "top1": full["top1"], "top2": full["top2"], "margin": full["margin"],
            "top1_logit": [logits[0] for logits in full["top5_logits"]]}


def model_golden(arch: str, folder: Path) -> dict:
    import llama_cpp

    path = synthetic.build(folder / f"{arch}-{QUANT}-{SEED}.gguf", arch, QUANT, SEED)
    llm, _ = load_llama(path, logits_all=True, n_ctx=512, n_batch=512)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def tokenize(text: str) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    chat = ("<|user|>\nExplain in two sentences why the sky is blue.<|end|>\n<|assistant|>\n" + PROMPTS["chat"]
            .split("<|im_start|>assistant\n")[1])
    texts = {"english": PROMPTS["english"], "python": PROMPTS["python"], "chinese": PROMPTS["chinese"], "chat": chat}
    texts["long"] = "\n".join(PROMPTS.values())
    sequences = [{"name": name, "text": text,
                  **rows(llm, tokenize(text)[:LONG_TOKENS if name == "long" else SEQUENCE_TOKENS])}
                 for name, text in texts.items()]
    print(f"{arch}: done", file=sys.stderr)
    return {
        "provenance": provenance(path, "python tests/goldens/make_spm_goldens.py",
                                 f"synthetic.build(arch={arch!r}, quant={QUANT!r}, seed={SEED}); "
                                 "llama_tokenize(add_special=True, parse_special=True); "
                                 "token_to_piece(lstrip=0, special=True); Llama(logits_all=True) rows"),
        "vocab_size": n_vocab,
        "bos_id": llama_cpp.llama_vocab_bos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "pieces": [piece(vocab, i).hex() for i in range(n_vocab)],
        "ids": [tokenize(text) for _, text in corpus()],
        "sequences": sequences,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("spm_goldens.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        models = {arch: model_golden(arch, Path(folder)) for arch in ARCHES}
    golden = {"quant": QUANT, "seed": SEED, "corpus": [{"category": c, "text": t} for c, t in corpus()],
              "models": models}
    write_json(args.out, golden)
    print(f"{len(golden['corpus'])} texts, {len(models)} models -> {args.out} ({args.out.stat().st_size} bytes)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
