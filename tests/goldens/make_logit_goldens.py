"""Regenerate tests/goldens/logit_goldens.json: llama.cpp's next-token logits on the real model.

For each prompt below, llama.cpp (llama-cpp-python, the `goldens` extra, CPU) tokenizes the text,
keeps the first 64 ids and evaluates them in one batch with logits for every position
(teacher forcing). Row p of a prompt describes the logits after ids[0..p], i.e. the prediction
of ids[p + 1]: the top-1 and top-2 ids, their logit margin, and the top-5 ids with logits.
The engine's agreement test compares its own top-1 with these where the margin is clear.

It also records the raw prompt "Write a haiku about GPU computing": llama.cpp's free-running
greedy continuation on this CPU, and teacher-forced rows over the prompt followed by the
continuation measured on an H100 (../shared/DESIGN.md, "Test models").

    python tests/goldens/make_logit_goldens.py [--model PATH] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from goldens_common import load_llama, provenance, write_json

N_TOKENS = 64
TOP_K = 5
PROMPTS = {
    "english": (
        "The history of computing is a story of machines that grew smaller, faster and cheaper at the same "
        "time. Early computers filled whole rooms and were programmed by rewiring panels of switches. The "
        "invention of the transistor, and later the integrated circuit, made it possible to put millions of "
        "switches on a single chip, and today a phone in your pocket outperforms the supercomputers of the past."
    ),
    "chat": (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nExplain in two sentences why the sky is blue.<|im_end|>\n<|im_start|>assistant\n"
        "The sky looks blue because molecules in the air scatter short blue wavelengths of sunlight much more "
        "strongly than the longer red ones. This scattered blue light reaches our eyes from every direction."
    ),
    "python": (
        "import numpy as np\n\n\ndef softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:\n"
        "    \"\"\"Numerically stable softmax along axis.\"\"\"\n    shifted = x - x.max(axis=axis, keepdims=True)\n"
        "    e = np.exp(shifted)\n    return e / e.sum(axis=axis, keepdims=True)\n\n\n"
        "def cross_entropy(logits, targets):\n    probs = softmax(logits)\n"
        "    return -np.log(probs[np.arange(len(targets)), targets]).mean()\n"
    ),
    "c": (
        "#include <stdio.h>\n#include <stdlib.h>\n\n/* Sum the elements of an array. */\n"
        "static long sum(const int *values, size_t count) {\n    long total = 0;\n"
        "    for (size_t i = 0; i < count; i++) {\n        total += values[i];\n    }\n    return total;\n}\n\n"
        "int main(void) {\n    int data[] = {1, 2, 3, 4, 5};\n"
        "    printf(\"%ld\\n\", sum(data, sizeof data / sizeof data[0]));\n    return 0;\n}\n"
    ),
    "german": (
        "Die Stadt liegt an einem breiten Fluss, über den seit dem Mittelalter eine steinerne Brücke führt. "
        "Im Sommer sitzen die Menschen in den Biergärten am Ufer, während Ausflugsschiffe langsam vorbeiziehen. "
        "Im Winter dagegen wird es früh dunkel, und auf dem Marktplatz öffnet der Weihnachtsmarkt seine Buden."
    ),
    "chinese": (
        "人工智能是计算机科学的一个分支，它试图理解智能的本质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
        "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。自诞生以来，理论和技术日益成熟，应用领域也不断扩大。"
        "可以设想，未来人工智能带来的科技产品，将会是人类智慧的容器。"
    ),
    "japanese": (
        "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
        "ニャーニャー泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。"
    ),
    "russian": (
        "Москва является столицей Российской Федерации и одним из крупнейших городов Европы. Город расположен "
        "на реке Москве в центре Восточно-Европейской равнины. В Москве находятся многочисленные музеи, театры "
        "и университеты, а также Кремль и Красная площадь."
    ),
    "math": (
        "Problem: A train travels 180 km in 2.5 hours. What is its average speed?\n"
        "Solution: speed = distance / time = 180 / 2.5 = 72 km/h.\n"
        "Check: 72 * 2.5 = 180. ✓\n"
        "Next, solve x^2 - 5x + 6 = 0: the roots are x = 2 and x = 3, since (x - 2)(x - 3) = x^2 - 5x + 6. "
        "In LaTeX: $\\int_0^1 x^2\\,dx = \\frac{1}{3}$."
    ),
    "json": (
        "{\n  \"model\": \"qwen2.5-coder-0.5b-instruct\",\n  \"backend\": \"numpy\",\n  \"vocab_size\": 151936,\n"
        "  \"layers\": 24,\n  \"heads\": {\"query\": 14, \"key_value\": 2},\n  \"quantization\": [\"Q4_K\", \"Q6_K\", \"Q8_0\"],\n"
        "  \"ok\": true\n}\n"
    ),
}
HAIKU_PROMPT = "Write a haiku about GPU computing"
# Greedy continuation measured with llama.cpp (CUDA) and HF transformers on an H100 (DESIGN.md).
HAIKU_DESIGN_CONTINUATION = [323, 1181, 5421, 389, 279, 4401, 315, 20443, 11229, 382,
                             49891, 45779, 374, 1075, 264, 45144, 11, 2303, 2132, 594]
HAIKU_GREEDY_TOKENS = 32


def teacher_forced(llm, ids: list[int]) -> dict:
    """Rows of top ids, margins and logits for ids evaluated in one batch."""
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    top_logits = np.take_along_axis(logits, top, axis=1)
    return {
        "ids": ids,
        "top1": top[:, 0].tolist(),
        "top2": top[:, 1].tolist(),
        "margin": np.round(top_logits[:, 0] - top_logits[:, 1], 4).tolist(),
        "top5": top.tolist(),
        "top5_logits": np.round(top_logits, 4).tolist(),
    }


def greedy(llm, prompt_ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """llama.cpp's free-running argmax continuation and the top-1/top-2 margin of each step."""
    llm.reset()
    llm.eval(prompt_ids)
    out, margins = [], []
    for _ in range(n):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        first, second = np.argsort(-logits, kind="stable")[:2]
        out.append(int(first))
        margins.append(round(float(logits[first] - logits[second]), 4))
        llm.eval([int(first)])
    return out, margins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="the real model's GGUF (default: reference_worker.models)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("logit_goldens.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    llm, model_path = load_llama(args.model, logits_all=True, n_ctx=256, n_batch=256,
                                 n_threads=args.threads, n_threads_batch=args.threads)

    prompts = []
    for name, text in PROMPTS.items():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        if len(ids) < N_TOKENS:
            raise SystemExit(f"prompt {name!r} has {len(ids)} tokens, fewer than {N_TOKENS}")
        prompts.append({"name": name, "text": text, **teacher_forced(llm, ids[:N_TOKENS])})
        print(f"{name}: done", file=sys.stderr)

    haiku_ids = llm.tokenize(HAIKU_PROMPT.encode("utf-8"), add_bos=True, special=True)
    continuation, margins = greedy(llm, haiku_ids, HAIKU_GREEDY_TOKENS)
    golden = {
        "provenance": provenance(model_path, "python tests/goldens/make_logit_goldens.py",
                                 "Llama(logits_all=True, n_gpu_layers=0); eval(ids) in one batch; "
                                 "rows are logits after ids[0..p]"),
        "n_tokens": N_TOKENS,
        "prompts": prompts,
        "haiku": {
            "text": HAIKU_PROMPT,
            "prompt_ids": haiku_ids,
            "design_continuation": HAIKU_DESIGN_CONTINUATION,
            "llama_cpp_greedy": continuation,
            "llama_cpp_greedy_margin": margins,
            "teacher_forced": teacher_forced(llm, haiku_ids + HAIKU_DESIGN_CONTINUATION),
        },
    }
    write_json(args.out, golden)
    print(f"{len(prompts)} prompts -> {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
