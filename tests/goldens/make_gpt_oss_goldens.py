"""Regenerate tests/goldens/gpt_oss_goldens.json: llama.cpp's logits on synthetic gpt-oss models.

Each model below is built by reference_worker.synthetic.build_gpt_oss (same arguments, same
bytes: the file's sha256 is recorded, and the test rebuilds and compares it). llama.cpp
(llama-cpp-python, the `goldens` extra, CPU) tokenizes each prompt, keeps its first 64 ids and
evaluates them in one batch with logits for every position (teacher forcing); rows are as in
logit_goldens.json (make_logit_goldens.teacher_forced). The prompts are longer than the models'
sliding window, so both kinds of attention layer are exercised.

    python tests/goldens/make_gpt_oss_goldens.py [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from goldens_common import load_llama, provenance, write_json
from make_logit_goldens import N_TOKENS, PROMPTS, teacher_forced

from reference_worker import synthetic

# name -> (seed, dims): the default small model, and one with more experts and another window
MODELS = {
    "small": (0, synthetic.GptOssDims()),
    "wide": (1, synthetic.GptOssDims(n_layer=2, n_embd=256, n_expert=8, n_expert_used=4, sliding_window=16)),
}
PROMPT_NAMES = tuple(PROMPTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpt_oss_goldens.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (seed, dims) in MODELS.items():
            path = synthetic.build_gpt_oss(Path(folder) / f"{name}.gguf", seed, dims)
            llm, _ = load_llama(path, logits_all=True, n_ctx=256, n_batch=256,
                                n_threads=args.threads, n_threads_batch=args.threads)
            prompts = []
            for prompt in PROMPT_NAMES:
                ids = llm.tokenize(PROMPTS[prompt].encode("utf-8"), add_bos=True, special=True)
                if len(ids) < N_TOKENS:
                    raise SystemExit(f"prompt {prompt!r} has {len(ids)} tokens on {name}, fewer than {N_TOKENS}")
                prompts.append({"name": prompt, "text": PROMPTS[prompt], **teacher_forced(llm, ids[:N_TOKENS])})
            models.append({
                "name": name, "seed": seed, "dims": asdict(dims),
                "provenance": provenance(path, "python tests/goldens/make_gpt_oss_goldens.py",
                                         "synthetic.build_gpt_oss(path, seed, GptOssDims(**dims)); "
                                         "Llama(logits_all=True, n_gpu_layers=0); eval(ids) in one batch"),
                "prompts": prompts,
            })
            del llm
            print(f"{name}: done", file=sys.stderr)
    write_json(args.out, {"n_tokens": N_TOKENS, "models": models})
    print(f"{len(models)} models -> {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
