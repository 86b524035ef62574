"""Scope audit: how verdicts are reached, what they cite, and the committed examples."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from requirements_map.audit import VERDICTS, AuditError, Auditor, audit_features
from requirements_map.audit_bench import cited_lines, load_labels
from requirements_map.audit_qualifiers import _values, qualifiers
from requirements_map.catalog import derive_catalog, load_catalog
from requirements_map.cli import main
from requirements_map.spec_index import SpecIndex, terms
from requirements_map.spec_source import load_spec

pytest_plugins = ["trace_fixtures"]

EXAMPLES = Path(__file__).resolve().parents[1] / "reports" / "examples"
EXAMPLE_FEATURES = ["speculative decoding", "API key authentication", "top-k sampling", "Prometheus /metrics",
                    "multi-GPU tensor parallelism", "a model-load progress bar", "zero-copy host memory"]


@pytest.fixture(scope="module")
def auditor(record_spec):
    return Auditor(SpecIndex(record_spec.parsed, load_catalog()), weighs=False)  # the rules, unweighed


def _all_lines(audit):
    return audit.evidence + audit.false_friends + audit.closest


@pytest.mark.parametrize("fmt, suffix", [([], "md"), (["--json"], "json")])
def test_committed_example_is_what_the_command_prints(fmt, suffix, capsys, record_spec):
    assert main(["audit", "--spec", str(record_spec.path), *fmt, *EXAMPLE_FEATURES]) == 0
    assert capsys.readouterr().out == (EXAMPLES / f"scope-audit.{suffix}").read_text(encoding="utf-8")


def test_committed_proposal_proof_is_what_the_command_prints(capsys, record_spec):
    proposal = EXAMPLES / "scope-proposal.md"
    assert main(["audit", "--spec", str(record_spec.path), "--proposal", str(proposal)]) == 0
    assert capsys.readouterr().out == (EXAMPLES / "scope-proposal-audit.md").read_text(encoding="utf-8")


def test_the_old_example_keeps_its_verdicts(auditor):
    expected = {"speculative decoding": "later milestone", "API key authentication": "later milestone",
                "top-k sampling": "later milestone", "Prometheus /metrics": "deferred to M1",
                "multi-GPU tensor parallelism": "later milestone", "a model-load progress bar": "in M0",
                "zero-copy host memory": "out of scope for M0"}
    assert {f: auditor.audit(f).verdict for f in expected} == expected


def test_every_quote_is_the_spec_line_it_cites(auditor, record_spec):
    for feature in [f["feature"] for f in load_labels()[::4]] + EXAMPLE_FEATURES:
        audit = auditor.audit(feature)
        assert audit.verdict in VERDICTS
        for ev in _all_lines(audit):
            assert record_spec.parsed.text(ev.line).strip() == ev.text, (feature, ev.line)
            section = record_spec.parsed.section_of(ev.line)
            assert ev.section == (f"§{section.number} {section.title}" if section else "(before the first section)")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(categories=("L", "N", "Zs", "Pd")), min_size=1, max_size=40))
def test_any_words_get_a_known_verdict_and_true_quotes(auditor, record_spec, words):
    if not words.strip():
        with pytest.raises(AuditError):
            auditor.audit(words)
        return
    audit = auditor.audit(words)
    assert audit.verdict in VERDICTS and audit.confidence in ("high", "medium", "unsure")
    for ev in _all_lines(audit):
        assert record_spec.parsed.text(ev.line).strip() == ev.text


def test_a_verdict_rests_on_lines_that_state_a_scope(auditor):
    for feature in ("memory-mapped model loading", "continuous batching", "zero-copy host memory"):
        audit = auditor.audit(feature)
        assert audit.verdict != "not addressed by the spec"
        assert any(ev.claim for ev in audit.evidence) and audit.confidence


@pytest.mark.parametrize("feature", ["support", "better support", "add a new feature", "improve the worker"])
def test_generic_words_yield_no_verdict(auditor, feature):
    audit = auditor.audit(feature)
    assert audit.verdict == "not addressed by the spec"
    assert not any(ev.claim for ev in audit.evidence)
    assert "generic" in audit.detail and audit.check


def test_a_direct_statement_outranks_indirect_evidence(auditor):
    # speculative decoding is a means to the token generation rate target (deferred to M1), but
    # §14.3 names it directly as M3+: the direct line decides
    audit = auditor.audit("speculative decoding")
    means = [ev for ev in audit.evidence if "a means to ‘token generation rate’" in ev.basis]
    assert means and all(ev.claim is None and "not that of its means" in ev.basis for ev in means)
    assert audit.verdict == "later milestone" and "M3+" in audit.detail and "indirect" not in audit.detail


@pytest.mark.parametrize("feature", ["tensor-core GEMMs for faster decoding", "YaRN context scaling"])
def test_a_means_to_an_m0_or_deferred_end_does_not_take_its_scope(auditor, feature):
    # tensor cores serve the token-rate target (deferred to M1), YaRN serves long contexts (in M0)
    audit = auditor.audit(feature)
    assert audit.verdict not in ("in M0", "deferred to M1") or audit.deciding_tier != 6, audit.detail
    assert not any(ev.claim in ("in-m0", "optional", "deferred-M1") and ev.tier == 6 for ev in audit.evidence)


def test_indirect_evidence_decides_only_when_nothing_direct_does(auditor):
    audit = auditor.audit("paged KV-cache block allocator")
    assert audit.verdict == "later milestone" and "indirect" in audit.detail and audit.confidence == "unsure"
    assert audit.unsure and "what it serves" in audit.confidence_reason
    assert {2916, 2919} <= {ev.line for ev in audit.evidence if ev.claim}


def test_a_kind_of_an_m0_thing_is_not_in_m0_but_a_kind_of_a_deferred_thing_is_deferred(auditor):
    unigram = auditor.audit("a unigram tokenizer")  # a kind of tokenizer backend; M0 names its two backends
    assert unigram.verdict == "not addressed by the spec", unigram.detail
    mirostat = auditor.audit("mirostat")  # a kind of advanced sampling, M2+ (§14.3 line 2914)
    assert mirostat.verdict == "later milestone" and 2914 in cited_lines(mirostat)


def test_a_stated_purpose_is_quoted_as_indirect_evidence(auditor):
    purpose = "improves first-token latency"
    audit = auditor.audit("a faster tokenizer warm-up", purpose)
    from_purpose = [ev for ev in audit.evidence if f"“{purpose}”" in ev.basis]
    assert from_purpose and all(ev.tier >= 5 for ev in from_purpose if ev.claim)
    assert 2190 in {ev.line for ev in from_purpose}  # M0-W-1600 First Token Latency


def test_a_requirement_that_forbids_it_puts_it_out_of_scope(auditor, record_spec):
    audit = auditor.audit("CPU offload of some layers")
    assert audit.verdict == "out of scope for M0"
    req = record_spec.parsed.requirements["M0-SYS-2.2.1"]
    assert any(req.line <= ev.line <= req.body[1] and ev.claim == "prohibited" for ev in audit.evidence)


def test_a_negated_mention_is_not_a_claim_for_it(auditor):
    audit = auditor.audit("structured logging")  # §0.0 kept item 8: narration-core logging (replaces structured logging)
    line_48 = next(ev for ev in audit.evidence if ev.line == 48)
    assert line_48.claim == "out-of-scope"


def test_same_words_of_another_concept_are_set_apart(auditor):
    audit = auditor.audit("zero-copy host memory")
    assert 2218 in {ev.line for ev in audit.false_friends}  # "zero-copy JSON parsing"
    assert 2218 not in {ev.line for ev in audit.evidence}


def test_milestones_with_nothing_in_common_make_it_contradictory(auditor):
    audit = auditor.audit("pool manager integration")  # §0.2: M1, §15.2: M2+
    assert audit.verdict == "contradictory"
    assert {127, 2980} <= cited_lines(audit)


def test_a_scope_list_at_another_milestone_than_the_deciding_line_makes_it_contradictory(auditor):
    audit = auditor.audit("full Prometheus exporter")  # §14.1 line 2876: M2+; §0.0 line 22 defers the endpoint to M1
    assert audit.verdict == "contradictory"
    assert {22, 2876} <= {n for c in audit.contradictions for n in c.lines} and {22, 2876} <= cited_lines(audit)
    assert "§0.0 line 22" in audit.detail and "§14.1 line 2876" in audit.detail  # both sides in the summary


def test_a_scope_the_catalog_only_infers_is_a_note_and_the_twin_deferral_contradicts(auditor):
    audit = auditor.audit("Qwen2.5-0.5B loading in under 10 s")  # M0-W-1120 (no list names it) and M0-W-1620 (§0.0)
    assert audit.verdict == "contradictory" and {740, 2261} <= cited_lines(audit)
    assert any(c.kind == "scope inferred by the catalog" and "M0-W-1120" in c.note for c in audit.contradictions)


def test_a_catalog_note_does_not_decide_an_aspect_the_deciding_line_states(auditor):
    audit = auditor.audit("cancellation completing within 5 s")  # M0-W-1330's own deadline; its note is about 100 ms
    assert audit.verdict == "in M0" and 1280 in cited_lines(audit)
    assert auditor.audit("exiting with code 1 when VRAM is insufficient at startup").verdict == "contradictory"


def test_the_requirement_of_a_concept_answers_for_the_rest_of_the_feature(auditor):
    audit = auditor.audit("the cancel endpoint answering 202 Accepted")
    line = next(ev for ev in audit.evidence if ev.line == 1272)  # "**Response**: HTTP 202 Accepted" in M0-W-1330
    heading = next(ev for ev in audit.evidence if ev.line == 1262)  # "#### [M0-W-1330] POST /cancel"
    assert audit.verdict == "in M0" and line.claim == "in-m0" and line.fit[0] > heading.fit[0]
    assert "line 1272" in audit.detail  # it names more of the feature, so it decides


def test_a_line_that_negates_what_the_feature_negates_agrees_with_it(auditor):
    audit = auditor.audit("deterministic CUDA kernels with no atomics")  # line 420 "No atomics" in deferred M0-W-1031
    assert audit.verdict == "deferred to M1", audit.detail


def test_a_scope_marker_speaks_for_its_own_sentence(auditor):
    # line 2781: "Sensitive data redaction deferred to M1. M0 may log prompts for debugging purposes."
    assert auditor.audit("M0 logging prompts for debugging").verdict == "in M0"
    assert auditor.audit("prompt redaction in logs").verdict == "deferred to M1"


@pytest.mark.parametrize("n, verdict", [(1000, "in M0"), (32768, "in M0"), (40000, "out of scope for M0")])
def test_a_stated_maximum_admits_every_value_below_it(auditor, n, verdict):
    audit = auditor.audit(f"prompts of {n} characters")  # M0-W-1300 line 1129: "max 32768 characters"
    assert audit.verdict == verdict and 1129 in cited_lines(audit), audit.detail


def test_overlapping_milestones_are_not_a_contradiction(auditor):
    audit = auditor.audit("API key authentication")  # M3+ (§14.3) lies within M2+ (§15.2)
    assert audit.verdict == "later milestone" and not any(c.kind == "milestones differ" for c in audit.contradictions)


def test_optional_now_and_required_later_is_one_answer(auditor):
    audit = auditor.audit("ready callback to the pool manager")
    assert audit.verdict == "in M0" and "optional" in audit.detail


def test_not_addressed_names_the_closest_lines_and_what_to_check(auditor):
    audit = auditor.audit("stop sequences")
    assert audit.verdict == "not addressed by the spec"
    assert audit.closest and audit.check and "does not name it" in audit.detail


def test_a_concept_the_spec_never_uses_is_not_answered_by_its_neighbours(auditor):
    audit = auditor.audit("TLS on the HTTP port")  # the port is in M0; TLS is nowhere
    assert audit.verdict == "not addressed by the spec" and "TLS" in audit.detail


def test_verdicts_carry_the_requirement_ids_they_rest_on(auditor):
    assert "M0-W-1221" in auditor.audit("memory-mapped model loading").requirements
    assert "M0-W-1350" in auditor.audit("Prometheus /metrics").requirements


def test_the_parent_spec_is_searched_on_request(record_spec):
    parent = record_spec.path.with_name("00_llama-orch.md")
    if not parent.is_file():
        pytest.skip(f"parent spec not next to the spec of record ({parent})")
    [tls] = audit_features(["TLS on the HTTP port"], record_spec.parsed, load_catalog(),
                           parent_text=parent.read_text(encoding="utf-8"))
    parent_lines = [ev for ev in tls.closest if ev.source == "parent"]
    assert parent_lines and any("TLS" in ev.text for ev in parent_lines)
    lines = parent.read_text(encoding="utf-8").splitlines()
    assert all(lines[ev.line - 1].strip() == ev.text for ev in parent_lines)


def test_the_next_revision_brings_top_k_into_m0_and_contradicts_itself(later_revision):
    spec = load_spec(later_revision("84202fea"), warn=lambda m: None)
    [top_k] = audit_features(["top-k sampling"], spec.parsed, derive_catalog(spec.parsed, spec.revision))
    # §0.0 of that revision adds it (tier 1), while §14.3 still says M2+ (tier 2): both sides are cited
    assert top_k.rules_verdict == "contradictory"
    clash = next(c for c in top_k.contradictions if c.kind == "in M0 vs not in M0")
    cited = {ev.line: ev for ev in top_k.evidence if ev.claim}
    assert {cited[n].section.split()[0] for n in clash.lines} >= {"§0.0", "§14.3"}
    # the verdict model may prefer one side; the verdict is then unsure and the disagreement stays shown
    assert top_k.verdict == "contradictory" or top_k.confidence == "unsure"


@pytest.mark.parametrize("features", [[], ["  "]])
def test_an_empty_feature_list_is_refused(features, record_spec, capsys):
    with pytest.raises(AuditError):
        audit_features(features, record_spec.parsed, load_catalog())
    assert main(["audit", "--spec", str(record_spec.path), *features]) == 2
    err = capsys.readouterr().err
    assert "m0-conformance audit: error:" in err and "Traceback" not in err


def test_audit_json_is_machine_readable(capsys, record_spec):
    assert main(["audit", "--json", "--spec", str(record_spec.path), "stop sequences"]) == 0
    data = json.loads(capsys.readouterr().out)
    [summary] = data["summary"]
    assert summary["feature"] == "stop sequences" and summary["verdict"] == "not addressed by the spec"
    assert data["features"][0]["closest"] and data["features"][0]["check"]


def test_names_in_another_word_order_find_the_requirement(auditor):
    audit = auditor.audit("switching models at runtime")  # M0-W-1001: "MUST NOT support ... switching models"
    assert audit.verdict == "out of scope for M0"
    assert 260 in cited_lines(audit)


def test_a_value_fixed_for_m0_is_not_a_claim_that_the_feature_is_in_m0(auditor):
    audit = auditor.audit("handling concurrent requests")  # line 2887: "Worker concurrency for M0 MUST be 1"
    line = next(ev for ev in audit.evidence if ev.line == 2887)
    assert line.claim is None and "fixes its value" in line.basis
    assert audit.verdict == "later milestone" and 1141 in cited_lines(audit)  # concurrent inference deferred to M2+


@pytest.mark.parametrize("feature, lines", [("GGUF version 1 files", {753, 808}), ("max_tokens up to 8192", {1130}),
                                            ("temperature 2.5", {58, 255}), ("a KV cache in INT4", {790, 1067}),
                                            ("shipping a 4 MB default H2D chunk size", {945})])
def test_a_qualifier_the_spec_contradicts_puts_the_feature_out_of_scope(auditor, feature, lines):
    audit = auditor.audit(feature)  # the lines state version 3, 1-2048, 0.0-2.0, FP16
    assert audit.verdict == "out of scope for M0", audit.detail
    stating = [ev for ev in audit.evidence if ev.line in lines]
    assert "differs" in audit.detail and stating
    assert all(ev.claim == "out-of-scope" and "states another" in ev.basis for ev in stating)


@pytest.mark.parametrize("feature", ["GGUF v3 model files", "1 MB chunked host-to-device copies", "port 8080",
                                     "HTTP 400 on invalid request parameters", "a 4 MB chunk size for H2D copies"])
def test_a_qualifier_the_spec_states_keeps_the_verdict(auditor, feature):
    audit = auditor.audit(feature)  # 8080 lies in 1024-65535; the 1MB chunk size is "configurable"
    assert audit.verdict == "in M0" and "differs" not in audit.detail, audit.detail


def test_a_configurable_value_is_cited_as_configurable_not_as_the_value_asked(auditor):
    setting = auditor.audit("a 4 MB chunk size for H2D copies")  # line 945: "1MB (configurable, but 1MB default)"
    line = next(ev for ev in setting.evidence if ev.line == 945)
    assert "configurable" in line.basis and "states the number" not in line.basis


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 20000))
def test_max_tokens_is_in_m0_exactly_within_the_stated_range(auditor, n):
    audit = auditor.audit(f"max_tokens of {n}")  # M0-W-1300: max_tokens MUST be 1-2048
    assert audit.verdict == ("in M0" if n <= 2048 else "out of scope for M0"), audit.detail


def test_qualifiers_are_read_without_names_that_carry_digits():
    found = [(q.kind, q.text) for q in qualifiers("UTF-8 SHA-256 sm_80 GPT-OSS-20B in FP32, GGUF v2, 0.0 to 2.0, 1 MB")]
    assert found == [("version", "v2"), ("data type", "FP32"), ("model size", "20B"), ("number", "0.0 to 2.0"),
                     ("number", "1 MB")]
    assert qualifiers("a 32K context")[0].anchors == {"context"}


def test_a_qualifier_the_spec_scopes_itself_gives_its_milestone(auditor):
    audit = auditor.audit("Qwen2.5-0.5B in Q8_0")  # Qwen is M0 in Q4_K_M; line 798: Q8_0 deferred to M2+
    assert audit.verdict == "later milestone" and "Q8_0" in audit.detail
    assert 798 in cited_lines(audit)


def test_a_qualifier_the_spec_never_states_leaves_the_feature_not_addressed(auditor):
    # the CUDA runtime is M0; no line states a runtime version ("12. ✅ All CUDA unit tests pass" is a list number)
    audit = auditor.audit("CUDA 12 runtime")
    assert audit.verdict == "not addressed by the spec" and "never states" in audit.detail
    assert audit.closest and audit.check


def test_lines_about_another_value_do_not_decide_a_qualified_feature(auditor):
    audit = auditor.audit("RTX 4090 support")  # only the deferred M0-W-1601 baseline names a GPU: the RTX 3090
    assert audit.verdict == "not addressed by the spec"


def test_the_spec_findings_on_the_deciding_requirements_stand_beside_the_verdict(auditor):
    from requirements_map.audit_proof import audit_findings
    from requirements_map.findings import load_findings

    findings = load_findings()
    gpt_oss = audit_findings(auditor.audit("GPT-OSS-20B support"), findings)
    assert "gpt-oss-is-not-gpt2" in {f.id for f in gpt_oss}
    assert audit_findings(auditor.audit("top-k sampling"), findings) == []


# --- round 4 mechanisms, probed with wordings that are not in the labels

def test_a_requirement_block_that_names_most_of_the_feature_settles_it(auditor):
    # no single line names "freeing", "VRAM buffers", "40 ms" and "cancel" together; M0-W-1610's block does
    audit = auditor.audit("freeing VRAM buffers within 40 ms of a cancel")
    assert audit.verdict == "deferred to M1" and "M0-W-1610" in audit.requirements
    assert 2233 in cited_lines(audit)


def test_a_deferred_requirement_naming_more_of_the_feature_outranks_a_generic_m0_line(auditor):
    # "health" alone is M0-W-1320 (in M0); cached state without CUDA calls is M0-W-1604 (deferred)
    audit = auditor.audit("health checks answered from cached state")
    assert audit.verdict == "deferred to M1" and "M0-W-1604" in audit.requirements


def test_a_qualifier_stated_anywhere_for_the_feature_does_not_differ(auditor):
    audit = auditor.audit("HTTP 499 status for cancelled jobs")  # §17 maps CANCELLED to 499 (line 3090)
    assert audit.verdict == "in M0" and 3090 in cited_lines(audit)
    assert auditor.audit("Q4_0 quantized models").verdict == "in M0"  # M0 has Q4_0 itself (lines 42, 770)


def test_a_size_in_bytes_is_checked_against_the_spec_value(auditor):
    audit = auditor.audit("512-byte tensor alignment")  # the spec says 256-byte (line 916)
    assert audit.verdict == "out of scope for M0" and 916 in cited_lines(audit)
    assert qualifiers("a 64-byte buffer")[0].unit == "bytes"


def test_non_negates_what_follows(auditor):
    assert auditor.audit("an empty prompt string").verdict == "out of scope for M0"  # "MUST be non-empty"


def test_a_feature_against_a_requirement_is_not_in_m0_by_that_requirements_lines(auditor):
    audit = auditor.audit("a single cudaMemcpy for the whole model")  # M0-W-1222: bounded chunks
    assert audit.verdict == "out of scope for M0"
    assert not [ev for ev in audit.evidence if ev.requirement == "M0-W-1222" and ev.claim == "in-m0"]


def test_a_versioned_name_with_a_word_the_spec_never_uses_is_not_addressed(auditor):
    audit = auditor.audit("Qwen2.5-Omni-0.5B")  # not the Qwen2.5-0.5B-Instruct that M0 names
    assert audit.verdict == "not addressed by the spec" and "“Omni”" in audit.detail
    assert auditor.audit("Qwen2.5-0.5B").verdict == "in M0"


def test_a_marker_from_m1_on_defers_to_m1(auditor):
    audit = auditor.audit("VRAM usage reported in the ready callback")  # line 307: "ready callback (M1+)"
    assert audit.verdict == "deferred to M1" and 307 in cited_lines(audit)


def test_the_required_form_of_what_m0_makes_optional_is_deferred(auditor):
    # lines 240 and 621: the callback is optional in M0 and required from M1+
    assert auditor.audit("a required --callback-url argument").verdict == "deferred to M1"
    assert auditor.audit("an optional --callback-url argument").verdict == "in M0"


def test_a_value_stated_only_in_a_deferred_requirement_defers_the_feature(auditor):
    # GGUF is M0, but "VRAM allocation: <1s" stands only in M0-W-1620's breakdown (deferred), line 2266
    audit = auditor.audit("VRAM allocation in under one second")
    assert audit.verdict == "deferred to M1" and "M0-W-1620" in audit.requirements and 2266 in cited_lines(audit)
    assert [q.low for q in qualifiers("within two minutes")] == [120.0]


# --- round 7 mechanisms, probed with wordings that are not in the labels

def test_a_value_given_as_an_example_is_not_a_qualifier():
    assert qualifiers("the driver version (e.g. 550) in the logs") == []
    assert qualifiers("a driver version of 550 in the logs")[0].text == "550"
    # an example runs to the end of its clause or parenthesis, whatever it names
    assert [q.text for q in qualifiers("cards like the H100 with 80 GB, in FP16")] == ["FP16"]
    assert [q.text for q in qualifiers("a 2 GB card such as a GT 1030, for tests")] == ["2 GB"]


def test_a_purpose_or_a_thousands_group_is_no_qualifier():
    assert qualifiers("64-bit offsets so files over 4 GB load") == []  # why, not what
    assert [q.text for q in qualifiers("a 32,768 token context")] == ["32,768"]
    assert qualifiers("an 8,192-token window") == []  # as "8-bit": never the 8 of 8,192


def test_a_line_states_values_in_its_own_terms(auditor):
    # "**3. Start HTTP server**:" (line 695) numbers a step, it states no HTTP status
    assert "695" not in auditor.audit("HTTP 503 from /health while the worker is unhealthy").detail
    # "`--inference-timeout-sec` ... (default: 300)" (line 635): the flag's name gives the unit
    assert auditor.audit("an --inference-timeout-sec flag with a default of 300 seconds").verdict == "in M0"
    # a word that only begins like the unit ("section") gives none
    timeout = qualifiers("a timeout of 300 seconds")[0]
    assert _values(timeout, "see section 300 of the guide") == []


def test_a_versioned_name_given_as_an_example_does_not_make_it_another_thing(auditor):
    # sm_70 is one of M0-W-1702's targets; the V100 only shows which cards those are
    assert auditor.audit("Volta cards such as the Tesla V100 (sm_70) as a build target").verdict == "in M0"
    assert auditor.audit("Volta cards with the Tesla V100 (sm_70) as a build target").verdict != "in M0"


@pytest.mark.parametrize("value, in_m0", [(2 ** 63, True), (7, True)])
def test_a_value_of_an_integer_type_the_spec_requires_is_stated(auditor, value, in_m0):
    audit = auditor.audit(f"a request seed of {value}")  # M0-W-1300: seed MUST be valid uint64
    assert (audit.verdict == "in M0") == in_m0 and "differs" not in audit.detail, audit.detail


@pytest.mark.parametrize("status, in_m0", [("499", True), ("418", False)])
def test_an_upper_case_code_name_anchors_the_value_stated_beside_it(auditor, status, in_m0):
    audit = auditor.audit(f"a CANCELLED error code sent as HTTP {status}")  # §17.4: CANCELLED -> 499
    assert (audit.verdict == "in M0") == in_m0, audit.detail
    assert not in_m0 or 3090 in cited_lines(audit)


@pytest.mark.parametrize("feature, verdict", [("HTTP 507 for a VRAM_OOM error", "out of scope for M0"),
                                              ("HTTP 500 for a VRAM_OOM error", "in M0")])
def test_a_value_stated_beside_an_identifier_decides_where_the_lines_about_the_feature_state_none(auditor, feature,
                                                                                                   verdict):
    audit = auditor.audit(feature)  # §17.4's table: | `VRAM_OOM` | ... | 500 | (line 3087)
    assert audit.verdict == verdict and 3087 in cited_lines(audit), audit.detail


@pytest.mark.parametrize("feature, line", [("zero-copy mode switched off", 285),
                                           ("a worker with RAM fallback disabled", 283)])
def test_asking_for_the_absence_of_a_prohibited_thing_complies(auditor, feature, line):
    assert auditor.audit(feature.replace(" switched off", "").replace(" disabled", "")).verdict == "out of scope for M0"
    audit = auditor.audit(feature)
    assert audit.verdict == "in M0" and "absent" in audit.detail and line in cited_lines(audit), audit.detail


def test_asking_for_the_absence_of_a_required_thing_goes_against_it(auditor):
    audit = auditor.audit("finishing a job's event stream without any terminal event")  # M0-W-1311, line 1174
    assert audit.verdict == "out of scope for M0" and 1174 in cited_lines(audit), audit.detail
    # a condition is a circumstance, not what the feature leaves out
    assert auditor.audit("an error event when no GPU is present").verdict != "out of scope for M0" or \
        "leaves out" not in auditor.audit("an error event when no GPU is present").detail


@pytest.mark.parametrize("feature, against", [("relative position embeddings in the GPT-style adapter", True),
                                              ("a relative tolerance for the MXFP4 GEMM test", False)])
def test_an_opposite_speaks_only_of_the_thing_it_qualifies(auditor, feature, against):
    # line 117 (§0.2): "GPT-style: Absolute pos embedding, ...": absolute embeddings, not tolerances
    audit = auditor.audit(feature)
    assert (117 in {ev.line for ev in audit.evidence if ev.claim == "out-of-scope"}) == against, audit.detail


def test_what_something_is_replaced_with_is_not_negated(auditor):
    # line 2739: "Structured logging replaced with narration-core logging (...)"
    audit = auditor.audit("narration-core logging for the worker's events")
    assert 2739 not in {ev.line for ev in audit.evidence if ev.claim in ("out-of-scope", "prohibited")}
    assert audit.verdict == "in M0", audit.detail


@pytest.mark.parametrize("feature, verdict", [("tokenizer test vectors run in GitHub Actions", "in M0"),
                                              ("mutual TLS for the /execute endpoint", "not addressed by the spec")])
def test_a_concept_the_spec_never_names_voids_the_rest_only_in_the_head(auditor, feature, verdict):
    # CI (after "in") is where M0-W-1363's vectors run; TLS is the feature itself
    assert auditor.audit(feature).verdict == verdict


def test_a_name_of_code_is_looked_up_exactly_and_inside_longer_names(auditor):
    # the glossary may know a name the spec never writes; "ffn_down" is written as "ffn_down.weight"
    unseen = auditor.audit("debug logging of the worker switched on with RUST_LOG")  # known to the glossary
    assert unseen.verdict == "not addressed by the spec" and "“RUST_LOG”" in unseen.detail, unseen.detail
    assert "never uses" not in auditor.audit("loading each block's ffn_down tensor").detail


def test_taking_one_side_where_the_spec_disagrees_with_itself_is_contradictory(auditor):
    import yaml

    from requirements_map import spec_conflicts
    from requirements_map.spec_conflicts import load_disagreements

    raw = yaml.safe_load((Path(spec_conflicts.__file__).parent / "data" / "contradictions.yaml").read_text())
    for d, entry in zip(load_disagreements(), raw):  # every side, named with the subject, meets the others
        for side, written in zip(d.sides, entry["sides"]):
            feature = f"{entry['names'][0]} with {written['names'][0]}" if written.get("names") else ""
            if not feature or d.taken(terms(feature)) is not side:
                continue
            audit = auditor.audit(feature)
            assert any(d.subject in c.note for c in audit.contradictions), (d.id, feature)
            if auditor._scopes_differ(d):  # else both sides are outside M0 alike: a note only
                others = {n for s in d.sides if s is not side for n in s.lines}
                assert audit.verdict == "contradictory" and others & cited_lines(audit), (d.id, feature, audit.detail)
    audit = auditor.audit("delivering M0 in 6-7 weeks")  # lines 7, 81 against 17, 3146
    assert audit.verdict == "contradictory" and {17, 3146} <= cited_lines(audit)
    named = auditor.audit("the M0 timeline")  # names the place, takes no side: a note
    assert named.verdict != "contradictory" and any("6-7 weeks" in c.note for c in named.contradictions)


def test_a_malformed_contradictions_file_is_a_clear_error(tmp_path, monkeypatch):
    from requirements_map import spec_conflicts

    bad = tmp_path / "requirements_map" / "data"
    bad.mkdir(parents=True)
    (bad / "contradictions.yaml").write_text("- {id: x, subject: y, sides: [{says: z, lines: [1]}]}\n")
    monkeypatch.setattr(spec_conflicts.resources, "files", lambda _: tmp_path / "requirements_map")
    spec_conflicts.load_disagreements.cache_clear()
    try:
        with pytest.raises(spec_conflicts.ConflictsError, match="two sides"):
            spec_conflicts.load_disagreements()
    finally:
        spec_conflicts.load_disagreements.cache_clear()


@pytest.mark.parametrize("feature", ["omitting the started event from the stream",
                                     "opening the stream with a token event instead of a started event"])
def test_leaving_out_or_replacing_a_required_thing_goes_against_it(auditor, feature):
    assert auditor.audit("the started event at the head of the stream").verdict == "in M0"
    audit = auditor.audit(feature)  # §17.2 line 3053: `started` ✅ Required
    assert audit.verdict == "out of scope for M0" and "leaves out" in audit.detail, audit.detail


@pytest.mark.parametrize("feature, paired", [("the hf-json backend for Phi-3-Mini", False),
                                             ("the gguf-bpe backend for Phi-3-Mini", True),
                                             ("Q4_0 fallback for GPT-OSS-20B", True),  # line 793: accept Q4_K_M or Q4_0
                                             ("MXFP4 weights for Phi-3-Mini", True)])  # line 1752: Qwen/Phi-3 if using MXFP4
def test_a_pairing_the_spec_never_makes_goes_against_the_pairings_it_makes(auditor, feature, paired):
    audit = auditor.audit(feature)
    assert (audit.verdict == "in M0") == paired, audit.detail
    assert paired or ("never with" in audit.detail and 111 in cited_lines(audit))  # hf-json for GPT-OSS-20B


def test_an_absence_an_m0_requirement_allows_does_not_go_against_it(auditor):
    # M0-W-1700: "MUST support building with or without CUDA"; M0-W-1702's CMake line applies when cuda is on
    assert auditor.audit("fake tokens on /execute from a build without the cuda feature").verdict != "out of scope for M0"


def test_the_audit_does_not_depend_on_the_hash_seed(record_spec):
    import os
    import subprocess
    import sys

    # shares are float sums over sets of words: summed in set order, seeds 1 and 3 cited other lines here
    feature = "Qwen2.5-0.5B loading in under 10 s"
    run = f"from requirements_map.cli import main; main(['audit', '--json', '--spec', {str(record_spec.path)!r}, {feature!r}])"
    outs = {subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "3")}
    assert len(outs) == 1 and feature in outs.pop()


@pytest.mark.parametrize("feature, verdict", [("MHA attention for Qwen2.5-0.5B", "out of scope for M0"),
                                              ("RMSNorm for GPT-OSS-20B", "out of scope for M0"),
                                              ("RoPE for Phi-3-Mini", "in M0")])
def test_a_kind_the_model_s_requirement_never_gives_it_goes_against_the_pairing(auditor, feature, verdict):
    # no line names a model beside its attention or norm; the adapter's requirement block does (M0-W-1214/1215)
    audit = auditor.audit(feature)
    assert audit.verdict == verdict, audit.detail
    if verdict != "in M0":
        # either way round: the model's lines give it the other kind, or the kind's lines another model
        assert any(ev.concept == "pairing" for ev in audit.evidence) and "never with" in audit.detail, audit.detail


def test_a_requirement_block_that_leaves_out_a_concept_of_the_feature_does_not_decide_it(auditor):
    # M0-W-1600's block (deferred) names "emit", "token" and "event" for the first token's latency, never
    # the started event; the event order is M0-W-1310/1312's
    audit = auditor.audit("token events emitted after the started event")
    assert audit.verdict == "in M0" and "2190" not in audit.detail, audit.detail


@pytest.mark.parametrize("feature, verdict", [("the hostname in the /health response", "not addressed by the spec"),
                                              ("a request counter on every end event", "not addressed by the spec"),
                                              # M0 lines name worker_id (--worker-id, logs), none of /health's
                                              ("the worker_id in the /health response", "not addressed by the spec"),
                                              ("tokens_out in the end event", "in M0"),
                                              ("vram_bytes_used in the /health response", "in M0")])
def test_a_thing_put_into_what_an_m0_requirement_defines_needs_that_requirement_to_name_it(auditor, feature, verdict):
    # /health (M0-W-1320) and the SSE events (M0-W-1310/1312) are M0's; their lines list what they carry
    audit = auditor.audit(feature)
    assert audit.verdict == verdict, audit.detail
    if verdict != "in M0":
        assert audit.confidence == "unsure" and {ev.requirement for ev in audit.closest} & {"M0-W-1320", "M0-W-1312"}


@pytest.mark.parametrize("feature", ["reusing one TCP connection (keep-alive) across /execute calls",
                                     "a cuBLAS handle created once and reused for the worker's lifetime"])
def test_lines_that_state_little_of_the_feature_leave_it_not_addressed(auditor, feature):
    audit = auditor.audit(feature)  # §7.1 has /execute, §9.4 the cuBLAS wrapper; neither says the rest
    assert audit.verdict == "not addressed by the spec" and "never state" in audit.detail, audit.detail
    assert audit.closest and audit.check and audit.confidence == "unsure"


def test_exactly_names_nothing_of_the_feature(auditor):
    # "exactly" only insists on the value, which M0-W-1032 states (0.0-2.0): the lines about temperature
    # state all of the feature, so the verdict is sure
    audit = auditor.audit("a temperature of exactly 2.0")
    assert audit.verdict == "in M0" and audit.confidence == "high", audit.detail


@pytest.mark.parametrize("feature, requirement", [("ReLU in the GPT adapter's FFN", "M0-W-1215"),
                                                  ("LayerNorm instead of RMSNorm in the Llama-style adapter", "M0-W-1214"),
                                                  ("ALiBi in the Llama adapter", "M0-W-1214")])
def test_a_kind_where_the_spec_gives_that_place_another_kind_is_out_of_scope(auditor, feature, requirement):
    # M0-W-1215 gives the GPT FFN GELU, M0-W-1214 the Llama-style pipeline RMSNorm and RoPE (glossary siblings)
    audit = auditor.audit(feature)
    assert audit.verdict == "out of scope for M0" and audit.requirements == [requirement], audit.detail
    assert any(ev.claim == "out-of-scope" and ev.requirement == requirement and "gives it" in ev.basis
               for ev in audit.evidence)


@pytest.mark.parametrize("feature", ["RMSNorm instead of LayerNorm in the Llama-style adapter", "GELU in the GPT adapter",
                                     "Q4_0 GGUF checkpoints"])
def test_the_kind_the_spec_gives_a_place_keeps_it_in_m0(auditor, feature):
    assert auditor.audit(feature).verdict == "in M0"
