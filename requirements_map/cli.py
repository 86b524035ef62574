"""m0-conformance: the conformance suite (run) and the traceability tools (map, check, scenarios, drift, audit,
findings, report).

Every failure a user can cause (a missing or wrong file, an empty feature list, results from
another catalog) ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import audit, audit_proof, drift, findings, report, run
from .audit_bench import load_calibration
from .glossary import GlossaryError
from .proposal import ProposalError, read_proposal
from .spec_index import ParentSpecError
from .catalog import (
    CatalogError,
    check_catalog,
    default_path,
    derive_catalog,
    feature_tags,
    later_revision_ids,
    load_catalog,
    with_scenarios,
)
from .results import ResultsError
from .semantic import SemanticModelError
from .spec_source import ENV_VAR, SpecSourceError, load_spec

USER_ERRORS = (SpecSourceError, CatalogError, audit.AuditError, ResultsError, report.ReportError, ProposalError,
               ParentSpecError, GlossaryError, findings.FindingsError, SemanticModelError)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        print(f"m0-conformance {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader (e.g. `| head`) stopped early; that is not our error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m0-conformance", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    spec_help = f"spec Markdown file (default: ${ENV_VAR}, else the cached pinned revision d4a857ac)"

    p = commands.add_parser("map", help="print the requirements catalog")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--spec", help=f"spec file (default: ${ENV_VAR}); when there is one, the catalog's "
                                  "disagreements with it are reported on stderr")
    p.set_defaults(run=_map)

    p = commands.add_parser("check", help="check that the catalog and the findings agree with the spec file")
    p.add_argument("--spec", help=spec_help)
    p.set_defaults(run=_check)

    p = commands.add_parser("scenarios", help="compare the catalog's scenarios column with feature tags")
    p.add_argument("--features", default="features", help="folder of .feature files (default: features)")
    p.add_argument("--write", action="store_true", help="rewrite the catalog's scenarios column")
    p.set_defaults(run=_scenarios)

    p = commands.add_parser("drift", help="requirement-level differences between two spec files")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_drift)

    p = commands.add_parser("audit", help="scope audit of proposed features, with spec citations")
    p.add_argument("features", nargs="*", metavar="FEATURE", help="a proposed feature in plain words")
    p.add_argument("--proposal", metavar="FILE",
                   help="a proposal (Markdown or YAML): each feature's name and the claim of what it is for")
    p.add_argument("--parent", metavar="FILE", help="also search the parent spec 00_llama-orch.md (context only)")
    p.add_argument("--spec", help=spec_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_audit)

    p = commands.add_parser("findings", help="the spec findings, their quotes checked against the spec file")
    p.add_argument("--spec", help=spec_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_findings)

    p = commands.add_parser("report", help="coverage report from conformance results")
    p.add_argument("--results", nargs="+", required=True, metavar="FILE",
                   help="cucumber JSON (pytest --cucumberjson) and/or JUnit XML (pytest --junitxml)")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--worker", help="name of the worker under test (default: as the harness recorded it "
                                    "in the JUnit XML)")
    p.add_argument("--spec", help=f"spec file whose revision the report names (default: ${ENV_VAR}, "
                                  "else the catalog's revision)")
    p.set_defaults(run=_report)

    p = commands.add_parser("run", help="run the conformance suite against a worker (or a fleet) and report",
                            description="Run the conformance suite, as installed, against a worker or a fleet; "
                                        "results and coverage reports go into one folder.")
    p.add_argument("--worker-url", action="append", default=[], metavar="URL",
                   help="a running worker; repeat for a fleet (each worker's scenarios in their own process)")
    p.add_argument("--worker-urls", metavar="FILE", help="a file of worker URLs, one a line: a fleet")
    p.add_argument("--worker-cmd", metavar="TEMPLATE",
                   help="a command that starts a worker, with {model} {port} {worker_id} {gpu_device}")
    p.add_argument("--model", help="model file for --worker-cmd; alone: the reference worker on it")
    p.add_argument("--out", default="m0-results", help="folder for the results and reports (default: m0-results)")
    p.add_argument("--processes", type=int, help="xdist processes for a fleet (default: one per worker)")
    p.add_argument("--robustness", action="store_true", help="also run the robustness profile")
    p.add_argument("--spec", help=f"spec file whose revision the reports name (default: ${ENV_VAR})")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
                   help="anything after -- goes to pytest (e.g. -- -k health --robustness-bodies 500)")
    p.set_defaults(run=_run)
    return parser


def _map(args) -> int:
    catalog = load_catalog()
    spec = args.spec or os.environ.get(ENV_VAR)
    if spec:
        for problem in check_catalog(catalog, load_spec(spec).parsed):
            print(f"warning: {problem}", file=sys.stderr)
    if args.json:
        print(catalog.to_json(), end="")
        return 0
    print(f"Requirements of spec revision {catalog.spec['revision']} ({len(catalog.entries)} ids)\n")
    print("| id | § | line | level | scope | observable | scenarios | title |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for e in catalog.entries:
        print(f"| {e['id']} | {e['section']} | {e['line']} | {e['level'] or '—'} | {e['scope']} | {e['observable']} "
              f"| {len(e['scenarios'])} | {e['title']} |")
    return 0


def _check(args) -> int:
    spec = load_spec(args.spec)
    problems = check_catalog(load_catalog(), spec.parsed)
    problems += [f"finding {p}" for p in findings.check_findings(findings.load_findings(), spec.parsed)]
    for problem in problems:
        print(problem)
    print(f"{len(problems)} disagreement(s) between the catalog or the findings and {spec.path}", file=sys.stderr)
    return 1 if problems else 0


def _findings(args) -> int:
    spec = load_spec(args.spec)
    known = findings.load_findings()
    problems = findings.check_findings(known, spec.parsed)
    if args.json:
        print(json.dumps({"spec": _identity(spec), "findings": [f.as_json() for f in known], "problems": problems},
                         indent=1, ensure_ascii=False))
    else:
        print(findings.render_markdown(known, spec.parsed), end="")
    print(f"{len(known)} finding(s); {len(problems)} quote(s) out of date in {spec.path}", file=sys.stderr)
    return 1 if problems else 0


def _scenarios(args) -> int:
    catalog = load_catalog()
    features = Path(args.features)
    later = later_revision_ids(catalog, features)
    synced = with_scenarios(catalog, feature_tags(features))
    stale = [e["id"] for e, s in zip(catalog.entries, synced.entries) if e["scenarios"] != s["scenarios"]]
    for revision, ids in sorted(later.items()):
        print(f"{revision} (not in the catalog of revision {catalog.spec['revision']}): "
              + ", ".join(f"{rid} ({len(scenarios)} scenario(s))" for rid, scenarios in sorted(ids.items())))
    if args.write:
        default_path().write_text(synced.to_json(), encoding="utf-8")
        print(f"updated the scenarios of {len(stale)} requirement(s) in {default_path()}")
        return 0
    for rid in stale:
        print(f"{rid}: scenarios differ from the tags in {args.features}/")
    return 1 if stale else 0


def _drift(args) -> int:
    old, new = load_spec(args.old, warn=_quiet), load_spec(args.new, warn=_quiet)
    changes = drift.compare(old.parsed, new.parsed)
    if args.json:
        print(json.dumps({"old": _identity(old), "new": _identity(new), "changes": drift.as_json(changes)}, indent=1))
    else:
        print(drift.render_markdown(changes, f"{old.path.name} ({old.revision})", f"{new.path.name} ({new.revision})"))
    return 0


def _audit(args) -> int:
    proposed = read_proposal(args.proposal) if args.proposal else []
    names = args.features + [f.name for f in proposed]
    purposes = [None] * len(args.features) + [f.purpose for f in proposed]
    if not names:
        raise audit.AuditError("no features given; name at least one, e.g. "
                               "m0-conformance audit \"speculative decoding\" \"top-k sampling\", "
                               "or pass --proposal FILE")
    spec = load_spec(args.spec)
    parent = _read_parent(args.parent) if args.parent else None
    catalog = load_catalog() if spec.is_pinned else derive_catalog(spec.parsed, spec.revision)
    audits = audit.audit_features(names, spec.parsed, catalog, purposes=purposes, parent_text=parent)
    identity = _identity(spec)
    calibration = load_calibration() if spec.is_pinned else None  # measured on labels of that revision only
    if args.json:
        print(json.dumps(audit_proof.as_json(audits, identity, calibration), indent=1, ensure_ascii=False))
    else:
        title = f"Scope audit of the proposal {Path(args.proposal).name}" if args.proposal else None
        print(audit_proof.render_markdown(audits, identity, title, calibration), end="")
    return 0


def _read_parent(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SpecSourceError(f"cannot read parent spec {path}: {reason}") from exc


def _report(args) -> int:
    written = report.write_reports(args.results, args.out, worker=args.worker,
                                   spec=args.spec or os.environ.get(ENV_VAR))
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def _run(args) -> int:
    if args.pytest_args[:1] == ["--"]:
        args.pytest_args = args.pytest_args[1:]
    args.spec = args.spec or os.environ.get(ENV_VAR)
    return run.run(args)


def _identity(spec) -> dict:
    """How outputs name the spec: the upstream path for the pinned revision (wherever its copy
    lies, so committed examples do not depend on it), else the file's name."""
    name = "llama-orch bin/.specs/01_M0_worker_orcd.md" if spec.is_pinned else spec.path.name
    return {"path": name, "sha256": spec.sha256, "revision": spec.revision}


def _quiet(message: str) -> None:
    """Drift compares revisions on purpose; their hashes differing is not news."""


if __name__ == "__main__":
    sys.exit(main())
