"""Regenerate tests/goldens/gpt2_goldens.json: llama.cpp on synthetic gpt2 models.

Each model is `reference_worker.synthetic.build_gpt2(path, quant, seed=SEED, tied_head=...)`,
whose bytes depend only on those arguments (the sha256 is recorded, and the test checks it).
llama.cpp (llama-cpp-python, the `goldens` extra, CPU) loads each one, tokenizes the prompts
of make_logit_goldens.py and evaluates the first 64 ids in one batch (teacher forcing): the
rows are the same as in logit_goldens.json. It also records its tokenization of a few texts
with the gpt-2 pre-tokenizer's edge cases, for the tokenizer.

    python tests/goldens/make_gpt2_goldens.py [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from goldens_common import load_llama, provenance, write_json
from make_logit_goldens import N_TOKENS, PROMPTS, teacher_forced

from reference_worker import synthetic

SEED = 11
MODELS = [("F16", True), ("Q8_0", True), ("Q5_0", False), ("Q4_K", True), ("Q6_K", False), ("mixed", False)]
PROMPT_NAMES = ("english", "python", "math")
TOKENIZER_TEXTS = [
    "I'm sure they'll say it's THE fox's den; WE'D rather not.",
    "    indented   spaces\tand\ttabs\n\n\nnewlines  \n  ",
    "123456789 + 0.5 = 3.14159, année 2026, 言語モデル",
    "<|endoftext|>The quick<|endoftext|> brown",
]


def tokenize(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpt2_goldens.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models, tokenizer = [], None
    with tempfile.TemporaryDirectory() as folder:
        for quant, tied_head in MODELS:
            path = synthetic.build_gpt2(Path(folder) / f"gpt2-{quant}.gguf", quant, SEED, tied_head=tied_head)
            llm, _ = load_llama(path, logits_all=True, n_ctx=256, n_batch=256,
                                n_threads=args.threads, n_threads_batch=args.threads)
            if tokenizer is None:  # one vocabulary for every model
                tokenizer = [{"text": text, "ids": tokenize(llm, text)} for text in TOKENIZER_TEXTS]
            prompts = []
            for name in PROMPT_NAMES:
                ids = tokenize(llm, PROMPTS[name])
                if len(ids) < N_TOKENS:
                    raise SystemExit(f"prompt {name!r} has {len(ids)} tokens, fewer than {N_TOKENS}")
                prompts.append({"name": name, **teacher_forced(llm, ids[:N_TOKENS])})
            models.append({
                "build_gpt2": {"quant": quant, "seed": SEED, "tied_head": tied_head},
                "provenance": provenance(path, "python tests/goldens/make_gpt2_goldens.py",
                                         "Llama(logits_all=True, n_gpu_layers=0); eval(ids) in one batch; "
                                         "rows are logits after ids[0..p]"),
                "prompts": prompts,
            })
            print(f"{quant}: done", file=sys.stderr)
    write_json(args.out, {"n_tokens": N_TOKENS, "tokenizer": tokenizer, "models": models})
    print(f"{len(models)} models -> {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
