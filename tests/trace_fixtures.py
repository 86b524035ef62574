"""Spec files for the traceability tests: $M0_SPEC (CI sets it), else ../shared/spec/ next to the repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from requirements_map.spec_source import SpecFile, load_spec

_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "spec" / "01_M0_worker_orcd.md"


def record_spec_path() -> Path:
    path = Path(os.environ.get("M0_SPEC") or _DEFAULT)
    if not path.is_file():
        pytest.fail(f"the spec of record is needed: set M0_SPEC to 01_M0_worker_orcd.md (tried {path})")
    return path


@pytest.fixture(scope="session")
def record_spec() -> SpecFile:
    """The revision of record, parsed."""
    return load_spec(record_spec_path(), warn=pytest.fail)


@pytest.fixture(scope="session")
def later_revision():
    """`later_revision("84202fea") -> Path` of a later revision lying next to the spec of record."""
    def find(revision: str) -> Path:
        path = record_spec_path().with_name(f"01_M0_worker_orcd.rev-{revision}.md")
        if not path.is_file():
            pytest.skip(f"later revision {revision} not next to the spec of record ({path})")
        return path
    return find
