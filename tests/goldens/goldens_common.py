"""What both golden scripts share: loading llama.cpp on the real model, and provenance."""
from __future__ import annotations

import json
import re
from pathlib import Path

from reference_worker import models


def load_llama(model: Path | None, **options):
    """(llama_cpp.Llama on model or the cached real model, its path); CPU only, quiet."""
    import llama_cpp  # the `goldens` extra: only these scripts need it

    path = Path(model) if model else models.real_model_path()
    return llama_cpp.Llama(model_path=str(path), n_gpu_layers=0, verbose=False, **options), path


def provenance(model_path: Path, command: str, how: str) -> dict:
    """Where a golden file came from, so that anyone can regenerate and compare it."""
    import llama_cpp

    return {
        "tool": "llama-cpp-python",
        "version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "model_file": model_path.name,
        "model_sha256": models.sha256_of(model_path),
        "command": command,
        "how": how,
    }


def write_json(path: Path, golden: dict) -> None:
    """Indented JSON with every list of numbers on one line, so that diffs stay readable.

    Only a "[" followed by a raw newline is touched: inside a JSON string a newline is escaped.
    """
    text = json.dumps(golden, ensure_ascii=False, indent=1)
    text = re.sub(r"\[\n\s+([-0-9.e,\s]+?)\n\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")
