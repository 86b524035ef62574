"""What a graph node and a grid-wide barrier cost on this GPU (issue 13, item 1): prints a table.

    python -m reference_worker.cuda.launch_probe [--nodes 165] [--barriers 150] [--work-kib 200]
        [--replays 20] [--step-ms 1.19]

A decode step is one CUDA graph of about 165 kernel nodes. The table gives, per node, the replay
time of a graph of `--nodes` kernels: empty ones; ones that call `griddepcontrol.launch_dependents`
and `griddepcontrol.wait` (PTX, sm_90), with plain edges and with programmatic ones
(programmatic dependent launch, PDL); and ones that each read `--work-kib` of their own weights
before the wait, like a small mat-vec, so PDL can overlap one kernel's prologue with the last
one's tail. Then the cost of one grid-wide barrier in a persistent kernel (one block per SM,
`--barriers` barriers, cooperative launch), the other way to cut the nodes. Each figure is also
multiplied out over a step and set against today's step (`--step-ms`). The L2 cache is flushed
before each replay (the model's weights do not fit in it); the median replay is reported.

CuPy compiles the kernels and owns memory, streams and events; the launches with attributes go
through driver_launch.py (cuLaunchKernelEx, as kernels.py's own launches with PDL), the graph
capture through the same driver handle, since CuPy cannot set launch attributes. The kernels are
a string here, not a `.cu` beside kernels.py, because kernels.load_modules compiles every `.cu`
there when the engine loads a model; they take their PDL helpers from common.cuh.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference_worker.cuda.driver_launch import ATTRIBUTE_COOPERATIVE, ATTRIBUTE_PROGRAMMATIC, Driver, attributes

KERNEL_DIR = Path(__file__).parent  # common.cuh, whose launch_dependents and wait_for_prerequisites the kernels use

SOURCE = r"""
#include "common.cuh"  // launch_dependents, wait_for_prerequisites

extern "C" __global__ void empty() {}

extern "C" __global__ void empty_pdl() {
    launch_dependents();
    wait_for_prerequisites();
}

// One node of a chain: y[b] = x[b] + the sum (mod 2^32) of block b's slice of `weights`. The
// slice, like a mat-vec's weights, does not depend on the previous kernel and is read before
// the wait; x, its output, after it.
extern "C" __global__ void work(const uint4* weights, int vecs_per_block, const unsigned int* x,
                                unsigned int* y) {
    __shared__ unsigned int warp_sums[32];
    launch_dependents();
    const uint4* slice = weights + (long long)blockIdx.x * vecs_per_block;
    unsigned int sum = 0;
    for (int i = threadIdx.x; i < vecs_per_block; i += blockDim.x) {
        const uint4 v = slice[i];
        sum += v.x + v.y + v.z + v.w;
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    wait_for_prerequisites();
    if (threadIdx.x == 0) {
        for (int w = 1; w < blockDim.x / 32; ++w) sum += warp_sums[w];
        y[blockIdx.x] = x[blockIdx.x] + sum;
    }
}

// A grid-wide barrier on a counter that only grows: the k-th barrier of a launch (from 0) is
// passed once (k + 1) * gridDim.x blocks have arrived. Every block must be resident: the
// cooperative launch checks that.
__device__ void grid_barrier(unsigned int* arrived, unsigned int target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();  // this block's writes before its arrival
        atomicAdd(arrived, 1u);
        while (*(volatile unsigned int*)arrived < target) {}
        __threadfence();
    }
    __syncthreads();
}

// n_barriers barriers; before each, block b writes the barrier's number into its slot, after it
// reads its neighbour's and counts a mismatch (slots alternate between two rows, so a write for
// barrier k + 1 cannot overtake a read for barrier k).
extern "C" __global__ void barriers(unsigned int* arrived, unsigned int* slots, unsigned int* mismatches,
                                    int n_barriers) {
    const unsigned int next = (blockIdx.x + 1) % gridDim.x;
    for (int k = 0; k < n_barriers; ++k) {
        volatile unsigned int* row = slots + (k % 2) * gridDim.x;
        if (threadIdx.x == 0) row[blockIdx.x] = k;
        grid_barrier(arrived, (k + 1) * gridDim.x);
        if (threadIdx.x == 0 && row[next] != (unsigned int)k) atomicAdd(mismatches, 1u);
    }
}
"""
THREADS = 128  # every kernel: one block of 128 threads, as most decode kernels use
WORK_BLOCKS = 224  # blocks of the 896-row mat-vec (kernels.matmul: 4 rows a block)
DEPENDENCY_PROGRAMMATIC = 1  # CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC (cuda.h)
CAPTURE_MODE_RELAXED = 2  # CU_STREAM_CAPTURE_MODE_RELAXED


class EdgeData(ctypes.Structure):
    """CUgraphEdgeData: ports, the dependency type, five reserved bytes."""

    _fields_ = [("from_port", ctypes.c_ubyte), ("to_port", ctypes.c_ubyte), ("type", ctypes.c_ubyte),
                ("reserved", ctypes.c_ubyte * 5)]


def record_graph(driver: Driver, stream, launch_all) -> tuple[ctypes.c_void_p, int | None]:
    """(an executable graph of what `launch_all` launches on `stream`, how many of its edges are
    programmatic, or None where the driver cannot say: before CUDA 12.3)."""
    driver("cuStreamBeginCapture_v2", ctypes.c_void_p(stream.ptr), CAPTURE_MODE_RELAXED)
    graph = ctypes.c_void_p()
    try:
        launch_all()
    except Exception:
        with contextlib.suppress(RuntimeError):  # leave capture mode; the launch's error is the one to report
            driver("cuStreamEndCapture", ctypes.c_void_p(stream.ptr), ctypes.byref(graph))
            if graph:
                driver("cuGraphDestroy", graph)
        raise
    driver("cuStreamEndCapture", ctypes.c_void_p(stream.ptr), ctypes.byref(graph))
    try:
        programmatic = _programmatic_edges(driver, graph)
        executable = ctypes.c_void_p()
        driver("cuGraphInstantiateWithFlags", ctypes.byref(executable), graph, ctypes.c_ulonglong(0))
    finally:
        driver("cuGraphDestroy", graph)
    return executable, programmatic


def _programmatic_edges(driver: Driver, graph: ctypes.c_void_p) -> int | None:
    if not driver.has("cuGraphGetEdges_v2"):
        return None
    count = ctypes.c_size_t()
    driver("cuGraphGetEdges_v2", graph, None, None, None, ctypes.byref(count))
    ends = [(ctypes.c_void_p * count.value)() for _ in range(2)]
    data = (EdgeData * count.value)()
    driver("cuGraphGetEdges_v2", graph, ends[0], ends[1], data, ctypes.byref(count))
    return sum(edge.type == DEPENDENCY_PROGRAMMATIC for edge in data)


# The graph cases: (key, kernel, programmatic edges, label, key of the row its saving is against).
CASES = (
    ("empty", "empty", False, "empty kernel", None),
    ("empty+gdc", "empty_pdl", False, "kernel that only calls launch_dependents + wait, plain edges", "empty"),
    ("empty+pdl", "empty_pdl", True, "the same, programmatic edges (PDL)", "empty+gdc"),
    ("work", "work", False, "kernel reading {kib} KiB ({blocks} blocks) before its wait, plain edges", None),
    ("work+pdl", "work", True, "the same, programmatic edges (PDL)", "work"),
)
BARRIER = "barrier"


@dataclass(frozen=True)
class ProbeResult:
    """What `probe` measured: us per node of each CASES key and per barrier (BARRIER), the
    driver's error for any that could not be measured, and the checks."""

    device: str
    driver_version: int
    nodes: int
    barriers: int
    barrier_blocks: int
    work_bytes: int
    us_each: dict[str, float]  # CASES keys and BARRIER; a failed one is in `failures` instead
    failures: dict[str, str]
    programmatic_edges: dict[str, int | None]  # per CASES key
    chain_matches: dict[str, bool]  # "work" and "work+pdl": the chain's result equals NumPy's
    barrier_mismatches: int

    @property
    def passed(self) -> bool:
        """Whether everything was measured, the chains computed what NumPy does and every
        barrier held."""
        return not self.failures and all(self.chain_matches.values()) and self.barrier_mismatches == 0


def format_table(result: ProbeResult, step_ms: float) -> str:
    """The markdown table: per node (or barrier) us, that x nodes as us a step and as a share of
    `step_ms`, and the saving x nodes against the row named in CASES; then the checks."""
    n = result.nodes
    labels = {key: label.format(kib=f"{result.work_bytes / 1024:.0f}", blocks=WORK_BLOCKS)
              for key, _, _, label, _ in CASES}
    labels[BARRIER] = (f"grid barrier in a persistent kernel ({result.barrier_blocks} blocks, one per SM, "
                       f"cooperative launch), in place of a node")
    baselines = {key: baseline for key, _, _, _, baseline in CASES} | {BARRIER: "empty"}
    us = result.us_each
    lines = [f"| {result.device}, driver {result.driver_version}: N = {n} nodes, B = {result.barriers} barriers "
             f"| us each | x {n}: us a step | of the {step_ms:g} ms step | saving x {n}: us a step (vs) |",
             "| --- | --- | --- | --- | --- |"]
    for key in labels:
        if key not in us:
            lines.append(f"| {key}: {labels[key]} | not measured: {result.failures[key]} | | | |")
            continue
        base = baselines[key]
        saving = f"{(us[base] - us[key]) * n:.1f} (vs {base})" if base in us else ""
        lines.append(f"| {key}: {labels[key]} | {us[key]:.3f} | {us[key] * n:.1f} | "
                     f"{us[key] * n / (step_ms * 1e3):.1%} | {saving} |")
    edges = ", ".join(f"{key} {'unknown' if count is None else count}"
                      for key, count in result.programmatic_edges.items())
    chains = ", ".join(f"{key} {'yes' if ok else 'NO'}" for key, ok in result.chain_matches.items())
    lines += ["", f"Programmatic edges of {n - 1} in each graph: {edges}.",
              f"The work chain's result equals NumPy's: {chains}. "
              f"Barrier mismatches: {result.barrier_mismatches}."]
    return "\n".join(lines)


def _median_replay_us(driver: Driver, executable, stream, replays: int, flush) -> float:
    """Median GPU time of one replay of `executable`, each after `flush()` on `stream`; all are
    queued before the first is waited for, so the host's launch hides behind the flush."""
    import cupy as cp

    driver("cuGraphLaunch", executable, ctypes.c_void_p(stream.ptr))  # the first replay uploads the graph
    marks = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(replays)]
    for start, end in marks:
        flush()
        start.record(stream)
        driver("cuGraphLaunch", executable, ctypes.c_void_p(stream.ptr))
        end.record(stream)
    marks[-1][1].synchronize()
    return statistics.median(cp.cuda.get_elapsed_time(start, end) for start, end in marks) * 1e3


def probe(nodes: int, barriers: int, work_kib: float, replays: int) -> ProbeResult:
    """Measure every CASES graph of `nodes` kernels and the barrier kernel on the current GPU."""
    import cupy as cp

    device = cp.cuda.Device()
    properties = cp.cuda.runtime.getDeviceProperties(device.id)
    driver, stream = Driver(), cp.cuda.Stream(non_blocking=True)
    if not driver.supports_programmatic_launch(int(device.compute_capability)):
        raise RuntimeError(f"programmatic dependent launch needs sm_90 or newer and cuLaunchKernelEx; this GPU is "
                           f"sm_{device.compute_capability}")
    module = cp.RawModule(code=SOURCE, options=("-std=c++17", f"-I{KERNEL_DIR}"))
    rng = np.random.default_rng(0)
    vecs = max(1, round(work_kib * 1024 / 16 / WORK_BLOCKS))  # uint4 a block
    words = rng.integers(0, 2**32, (nodes, WORK_BLOCKS, vecs * 4), dtype=np.uint32)  # each node its own
    weights = cp.asarray(words)
    x0 = rng.integers(0, 2**32, WORK_BLOCKS, dtype=np.uint32)
    chain = [cp.empty(WORK_BLOCKS, cp.uint32) for _ in range(2)]
    scratch = cp.zeros(2 * properties["l2CacheSize"] // 4, cp.uint32)

    def flush():
        with stream:
            scratch.sum()

    def launches(kernel: str, function, pdl: bool):
        launch_attributes = attributes(ATTRIBUTE_PROGRAMMATIC) if pdl else attributes()
        for i in range(nodes):
            args = () if kernel != "work" else (weights[i], np.int32(vecs), chain[i % 2], chain[(i + 1) % 2])
            driver.launch(function.ptr, (WORK_BLOCKS if kernel == "work" else 1,), (THREADS,), stream.ptr, args,
                          launch_attributes=launch_attributes)

    want = x0 + words.sum(axis=2, dtype=np.uint32).sum(axis=0, dtype=np.uint32)
    edges, matches = {}, {}

    def graph_us(key: str, kernel: str, pdl: bool) -> float:
        function = module.get_function(kernel).kernel  # compiles and loads the module: not while capturing
        executable, edges[key] = record_graph(driver, stream, lambda: launches(kernel, function, pdl))
        try:
            if kernel == "work":
                chain[0].set(x0, stream)
                driver("cuGraphLaunch", executable, ctypes.c_void_p(stream.ptr))
                stream.synchronize()
                matches[key] = bool(np.array_equal(chain[nodes % 2].get(), want))
            return _median_replay_us(driver, executable, stream, replays, flush) / nodes
        finally:
            driver("cuGraphExecDestroy", executable)

    blocks = properties["multiProcessorCount"]
    state = cp.zeros(1 + 2 * blocks + 1, cp.uint32)  # the barrier kernel's: arrived, two rows of slots, mismatches
    measures = [(key, functools.partial(graph_us, key, kernel, pdl)) for key, kernel, pdl, _, _ in CASES]
    measures.append((BARRIER, functools.partial(_barrier_us, driver, module, stream, state, barriers, replays)))
    us_each, failures = {}, {}
    for key, measure in measures:
        try:
            us_each[key] = measure()
        except Exception as e:  # noqa: BLE001 - one mode that fails leaves the others' figures
            failures[key] = " ".join(f"{type(e).__name__}: {e}".replace("|", "/").split())[:400]  # one table cell
    return ProbeResult(
        device=properties["name"].decode(), driver_version=cp.cuda.runtime.driverGetVersion(), nodes=nodes,
        barriers=barriers, barrier_blocks=blocks, work_bytes=WORK_BLOCKS * vecs * 16, us_each=us_each,
        failures=failures, programmatic_edges=edges, chain_matches=matches,
        barrier_mismatches=int(state[-1:].get(stream)[0]))


def _barrier_us(driver: Driver, module, stream, state, barriers: int, replays: int) -> float:
    """us per barrier: the median launch of `barriers` barriers less that of none, over
    `barriers`; one block per SM, the slots of `state` for each. The kernel adds its mismatches
    to the last word of `state` over all its launches."""
    import cupy as cp

    function, blocks = module.get_function("barriers").kernel, (state.size - 2) // 2
    arrived, slots, mismatches = state[:1], state[1:-1], state[-1:]

    medians = []
    for n in (0, barriers):
        marks = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(replays + 1)]
        for start, end in marks:
            with stream:
                state[:-1].fill(0)
            start.record(stream)
            driver.launch(function.ptr, (blocks,), (THREADS,), stream.ptr, (arrived, slots, mismatches, np.int32(n)),
                          launch_attributes=attributes(ATTRIBUTE_COOPERATIVE))
            end.record(stream)
        marks[-1][1].synchronize()
        medians.append(statistics.median(cp.cuda.get_elapsed_time(s, e) for s, e in marks[1:]) * 1e3)
    return (medians[1] - medians[0]) / barriers


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.cuda.launch_probe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=_positive(int), default=165, help="kernels per graph (default: %(default)s)")
    parser.add_argument("--barriers", type=_positive(int), default=150,
                        help="grid barriers in the persistent kernel (default: %(default)s)")
    parser.add_argument("--work-kib", type=_positive(float), default=200.0,
                        help="KiB each working kernel reads (default: %(default)s)")
    parser.add_argument("--replays", type=_positive(int), default=20,
                        help="timed replays of each graph, median reported (default: %(default)s)")
    parser.add_argument("--step-ms", type=_positive(float), default=1.19,
                        help="today's decode step to set the figures against (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.nodes < 2:
        parser.error("--nodes must be at least 2: a graph of one node has no edge")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from reference_worker.cuda import cuda_unavailable_reason

    if (reason := cuda_unavailable_reason()) is not None:
        print(f"launch_probe: {reason}", file=sys.stderr)
        return 1
    from reference_worker.cuda.kernels import CUDA_ERRORS

    try:
        result = probe(args.nodes, args.barriers, args.work_kib, args.replays)
    except (RuntimeError, *CUDA_ERRORS) as e:
        print(f"launch_probe: {e}", file=sys.stderr)
        return 1
    print(format_table(result, args.step_ms))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
