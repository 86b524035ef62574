"""Where the spec comes from: explicit file, $M0_SPEC, or the hash-checked cached pinned copy."""
from __future__ import annotations

import io

import pytest

from requirements_map import spec_source
from requirements_map.cli import main
from requirements_map.spec_source import (
    PINNED_SHA256,
    SpecSourceError,
    cache_path,
    load_spec,
)

pytest_plugins = ["trace_fixtures"]


@pytest.fixture
def no_spec_anywhere(monkeypatch, tmp_path):
    """No --spec, no $M0_SPEC, an empty cache, and a fetch URL that refuses at once."""
    monkeypatch.delenv("M0_SPEC", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(spec_source, "PINNED_URL", "http://127.0.0.1:9/01_M0_worker_orcd.md")


def test_the_pinned_file_loads_without_warning(record_spec):
    warnings = []
    spec = load_spec(record_spec.path, warn=warnings.append)
    assert spec.is_pinned and spec.sha256 == PINNED_SHA256 and warnings == []


def test_env_var_names_the_file(monkeypatch, record_spec):
    monkeypatch.setenv("M0_SPEC", str(record_spec.path))
    assert load_spec().is_pinned


@pytest.mark.parametrize("revision", ["84202fea", "1adb7159"])
def test_a_later_revision_is_used_with_a_warning_naming_it(later_revision, revision):
    warnings = []
    spec = load_spec(later_revision(revision), warn=warnings.append)
    assert not spec.is_pinned and spec.revision.startswith(revision)
    assert len(warnings) == 1 and f"appears to be {revision}" in warnings[0]


def test_an_edited_copy_is_an_unknown_revision(tmp_path, record_spec):
    copy = tmp_path / "spec.md"
    copy.write_text(record_spec.path.read_text() + "\nA trailing note.\n")
    warnings = []
    assert load_spec(copy, warn=warnings.append).revision == "unknown revision"
    assert "unknown revision" in warnings[0]


def test_missing_and_non_spec_files_are_clear_errors(tmp_path):
    with pytest.raises(SpecSourceError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.md")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nNothing normative here.\n")
    with pytest.raises(SpecSourceError, match="is not an M0 worker spec"):
        load_spec(notes)
    binary = tmp_path / "blob.md"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(SpecSourceError, match="is not an M0 worker spec"):
        load_spec(binary)


def test_without_network_the_message_says_what_to_do(no_spec_anywhere):
    with pytest.raises(SpecSourceError) as caught:
        load_spec()
    assert "--spec FILE" in str(caught.value) and "M0_SPEC" in str(caught.value)


def test_the_cli_reports_it_without_a_traceback(no_spec_anywhere, capsys):
    assert main(["audit", "speculative decoding"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m0-conformance audit: error: no spec given") and "Traceback" not in err


def test_a_cached_pinned_copy_is_used(record_spec, no_spec_anywhere):
    cache_path().parent.mkdir(parents=True)
    cache_path().write_bytes(record_spec.path.read_bytes())
    assert load_spec().path == cache_path()


def test_a_fetch_is_hash_checked_and_cached(record_spec, no_spec_anywhere, monkeypatch):
    served = {"body": record_spec.path.read_bytes()}
    monkeypatch.setattr(spec_source.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served["body"]))
    spec = load_spec()
    assert spec.is_pinned and cache_path().read_bytes() == served["body"]
    cache_path().unlink()
    served["body"] = b"#### [M0-W-1000] Tampered\n"
    with pytest.raises(SpecSourceError, match="not the pinned"):
        load_spec()
    assert not cache_path().exists()
