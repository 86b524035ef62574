"""The spec index (every line with its context, BM25 search) and the field glossary."""
from __future__ import annotations

import pytest

from requirements_map.catalog import load_catalog
from requirements_map.glossary import load_glossary
from requirements_map.spec_index import ParentSpecError, SpecIndex, key_terms, near, terms

pytest_plugins = ["trace_fixtures"]


@pytest.fixture(scope="module")
def index(record_spec):
    return SpecIndex(record_spec.parsed, load_catalog())


def test_every_line_is_indexed_with_its_section_and_requirement(index, record_spec):
    spec = record_spec.parsed
    assert [e.line for e in index.lines] == list(range(1, len(spec.lines) + 1))
    for req in spec.requirements.values():
        for n in (req.line, req.body[1]):
            assert index.at(n).requirement == req.id
            assert index.at(n).requirement_scope == load_catalog().by_id()[req.id]["scope"]
    assert index.at(1).requirement is None


def test_scope_list_items_know_their_list(index):
    assert index.at(22).scope_list.startswith("§0.0 DEFERRED to M1+")
    assert index.at(41).scope_list.startswith("§0.0 KEPT in M0")
    assert index.at(129).scope_list == "§0.2 Out of Scope for M0"
    assert index.at(2920).scope_list.startswith("§14.3 Advanced Features")
    assert index.at(2983).scope_list == "§15.2 Deferred to M2+"
    assert index.at(926).scope_list is None


def test_search_is_stemmed_and_ranked(index):
    # "copies" and "chunked" meet "copy" and "chunks" of M0-W-1222
    best = [e.requirement for e, _ in index.search("chunked copies of tensors", k=5)]
    assert "M0-W-1222" in best
    ranked = index.search("memory-mapped I/O")
    assert 926 in [e.line for e, _ in ranked[:3]]  # the heading of M0-W-1221
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_terms_keep_ids_paths_and_units_whole():
    assert terms("See M0-W-1222: GET /metrics in 1 MB chunks") == ("see", "m0-w-1222", "get", "/metrics", "1mb", "chunk")
    assert key_terms("better support for Qwen2.5") == ("qwen2.5",)


def test_a_file_that_is_not_the_parent_spec_is_refused(record_spec):
    with pytest.raises(ParentSpecError):
        SpecIndex(record_spec.parsed, load_catalog(), "# notes\n\nnothing here\n")


def test_glossary_is_large_consistent_and_tied_to_real_requirements():
    glossary = load_glossary()
    catalog = load_catalog().by_id()
    assert len(glossary.entries) >= 200
    owner: dict[frozenset, str] = {}  # names match in any word order, so no two entries share a set of terms
    for entry in glossary.entries:
        for rid in entry.req + tuple(rid for rid, _ in entry.conflicts):
            assert rid in catalog, (entry.term, rid)
        for _, target in glossary.related(entry):
            assert target.term != entry.term
        for name in entry.names:
            assert name.split()[0].lower() not in ("no", "without"), name  # a name says what it is, not what it lacks
            words = frozenset(terms(name))
            owner.setdefault(words, entry.term)
            assert owner[words] == entry.term, f"{name!r} names both {owner[words]!r} and {entry.term!r}"


def test_the_most_specific_glossary_concept_wins():
    glossary = load_glossary()
    assert [m.entry.term for m in glossary.match("paged KV-cache block allocator")] == ["paged KV allocator"]
    assert [m.entry.term for m in glossary.match("H2D transfer")] == ["host-to-device copy"]
    assert glossary.match("draft model")[0].entry.term == "speculative decoding"
    assert glossary.match("SSE")[0].entry.term == "server-sent events"


def test_names_match_in_any_word_order_within_a_window():
    assert near(terms("model switching"), terms("switching models at runtime"))
    assert near(terms("KV cache"), terms("KV entries live in the cache"))  # in order, two words between
    assert near(terms("KV cache"), terms("cache entries for KV"))  # any order, one word between
    assert not near(terms("KV cache"), terms("cache entries held by KV"))  # any order, two words between
    assert not near(terms("host-mapped memory"), terms("Memory-mapped I/O (mmap for host I/O)"))
    assert [m.entry.term for m in load_glossary().match("switching models at runtime")] == ["model hot-swap"]


def test_british_and_american_spellings_are_one_term():
    for british, american in [("synchronising", "synchronizing"), ("behaviour", "behavior"), ("analysed", "analyzed"),
                              ("tokenisation", "tokenization"), ("optimise", "optimize")]:
        assert terms(british) == terms(american), british


def test_cpp_and_other_specs_ids_stay_whole():
    assert terms("C++") != terms("C") and terms("a C API (not C++)") == ("c", "api", "c++")
    assert terms("Spec Reference: CUDA-5321") == ("spec", "refer", "cuda-5321")  # not the word "cuda"


def test_a_contraction_reads_as_its_words():
    # "doesn't" is "does not": no word "doesn" of the highest weight (the spec never writes it) and no "t"
    assert terms("a failed job doesn't take the worker down") == terms("a failed job does not take the worker down")
    assert terms("can't") == terms("won’t") == ()
