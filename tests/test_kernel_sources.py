"""The CUDA sources themselves, without a GPU: every kernel waits for its prerequisites.

kernels.py launches every kernel with programmatic dependent launch on sm_90 and later, so a
kernel may start before the one ahead of it on the stream has finished; common.cuh's
wait_for_prerequisites is what orders them, and every kernel must execute it (common.cuh says
why). This test parses reference_worker/cuda/*.cu and *.cuh and fails for any `extern "C"
__global__` kernel whose body calls it neither itself nor through a `__device__` function it
calls, so that a new kernel cannot forget it. Where the wait sits in a kernel (before anything
another kernel writes or reads) is for review to check.
"""
from __future__ import annotations

import re
from pathlib import Path

KERNEL_DIR = Path(__file__).parents[1] / "reference_worker" / "cuda"
WAIT = "wait_for_prerequisites"
KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+(?:##\w+)*)\s*\(')
CALL = re.compile(r"\b(\w+)\s*(?:<[^<>;{}()]*>)?\s*\(")


def source_text() -> str:
    """Every .cu and .cuh file, comments removed and macro lines joined."""
    text = "\n".join(path.read_text() for path in sorted(KERNEL_DIR.glob("*.cu*")))
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return text.replace("\\\n", " ")


def closing(text: str, at: int, open_: str, close: str) -> int:
    """The index just past the bracket that closes the one at `at`."""
    depth = 0
    for i in range(at, len(text)):
        depth += (text[i] == open_) - (text[i] == close)
        if depth == 0:
            return i + 1
    raise ValueError(f"unbalanced {open_} at {at}")


def body_after(text: str, parameters_at: int) -> str | None:
    """The body of the function whose parameter list opens at `parameters_at`, or None for a
    declaration."""
    end = closing(text, parameters_at, "(", ")")
    rest = text[end:].lstrip()
    if not rest.startswith("{"):
        return None
    start = len(text) - len(rest)
    return text[start:closing(text, start, "{", "}")]


def device_functions(text: str) -> dict[str, str]:
    """Name -> the bodies (joined) of every `__device__` function defined in the sources."""
    bodies: dict[str, str] = {}
    for match in re.finditer(r"__device__\b", text):
        head = text[match.end():]
        paren, semicolon = head.find("("), head.find(";")
        if paren < 0 or 0 <= semicolon < paren:
            continue  # a __device__ variable
        name = re.findall(r"(\w+)\s*$", head[:paren])
        body = body_after(text, match.end() + paren)
        if name and body is not None:
            bodies[name[0]] = bodies.get(name[0], "") + body
    return bodies


def waiting_functions(functions: dict[str, str]) -> set[str]:
    """The device functions that call WAIT, themselves or through the functions they call."""
    calls = {name: set(CALL.findall(body)) for name, body in functions.items()}
    waiting = {name for name, called in calls.items() if WAIT in called}
    while grown := {name for name, called in calls.items() if name not in waiting and called & waiting}:
        waiting |= grown
    return waiting


def kernels(text: str) -> dict[str, str]:
    """Kernel name (a macro's kernels with its ## left in) -> body."""
    return {match.group(1): body_after(text, match.end() - 1) for match in KERNEL.finditer(text)}


def test_the_parser_finds_every_kernel_and_follows_calls():
    text = source_text()
    found = kernels(text)
    assert len(found) == len(re.findall(r'extern\s+"C"\s+__global__', text)) > 40
    assert all(body is not None for body in found.values())
    functions = device_functions(text)
    assert WAIT in functions and "matvec_impl" in functions and "rmsnorm_in_shared" in functions
    sample = {"outer": " inner<QT, 1>(x); ", "inner": f" {WAIT}(); ", "other": " block_sum(v); "}
    assert waiting_functions(sample) == {"outer", "inner"}


def test_every_kernel_waits_for_its_prerequisites():
    text = source_text()
    functions = device_functions(text)
    waiting = waiting_functions(functions) | {WAIT}
    missing = sorted(name for name, body in kernels(text).items() if not set(CALL.findall(body)) & waiting)
    assert missing == [], f"kernels that never call {WAIT}() (common.cuh): {missing}"
