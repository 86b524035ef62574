"""Token generation with everything on the GPU: prefill, sampling, and each step replayed as a
CUDA graph, so a token costs one graph launch and one 4-byte copy to the host.

A graph holds the adapter's own forward pass (recorded with the ops in capture mode, which read
tokens and positions from device memory), then the repetition penalty and the sampler
(sampling.cu, the semantics of sampler.py), then `commit_token`, which appends the chosen id to
the history and advances the position. Replaying it therefore needs no new arguments. The
decode step is one such graph; a prompt's last chunk is another, recorded once per bucket of
`PREFILL_BUCKETS` rows: its ids come from the history (prefill.cu, `chunk_ids`), padded to the
bucket, the prompt's length from `state`, and the output head reads the prompt's last row
(`last_row`). Padding rows cannot reach the real ones (attention is causal, the rest works row
by row) and their cache entries lie past the prompt, where each decode step writes its position
before it attends to it. The whole chunks before a long prompt's last one replay one more graph
(`FULL_CHUNK`): the chunk's ids from the history at state[0], the forward pass, and the position
moved past the chunk (`chunk_done`); nothing is drawn. Graphs are tied to the KV cache and
history they were recorded with (keyed by their pointers): the engine's one cache, allocated at
load, so each graph is recorded once and replayed by every request after.
"""
from __future__ import annotations

import contextlib

import cupy as cp
import numpy as np

from reference_worker.adapter import PREFILL_CHUNK  # the engine's: a sliding-window ring holds one chunk
from reference_worker.cuda import kernels
from reference_worker.cuda.kernels import cuda_errors
from reference_worker.cuda.ops import CudaOps, KVCache
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.sampler import SamplingParams

# Rows of the prefill graphs: a prompt's last chunk (1..PREFILL_CHUNK tokens) runs in the
# smallest that holds it; a single token is a decode step, the decode graph itself.
PREFILL_BUCKETS = (8, 16, 32, 64, 128, 256)
# The key of the graph of a whole chunk before a prompt's last one (PREFILL_CHUNK rows, no sampling).
FULL_CHUNK = "chunk"
# Graphs of more rows are recorded without programmatic dependent launch: there each kernel's
# blocks launched early wait on SMs that the tensor-core GEMMs' many blocks need (on the H200 a
# 256-row chunk took 13.7 ms as a graph with PDL, 10.4 ms op by op; NOTES.md).
PDL_MAX_ROWS = 16


class DeviceDecoder:
    """Generates tokens for one adapter on CudaOps; `start` then `next` per request."""

    def __init__(self, ops: CudaOps, adapter) -> None:
        self.ops = ops
        self.adapter = adapter
        n_vocab = adapter.hp.n_vocab
        with cuda_errors("allocating decoder state"):
            self.fparams = cp.zeros(4, np.float32)
            self.iparams = cp.zeros(3, np.uint32)
            self.mask = cp.zeros(n_vocab, np.int32)
            self.sample_scratch = kernels.sample_scratch()
            self.history = cp.zeros(0, np.int32)
            self.chunk_ids = cp.zeros(PREFILL_CHUNK, np.int32)  # a padded chunk's ids, filled by its graph
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.prefill_buckets = PREFILL_BUCKETS  # (): every prompt op by op (the unpadded path, for comparison)
        # rows (1: the decode step; FULL_CHUNK: a chunk before the last) -> (graph, the logits it samples from)
        self.graphs: dict[int | str, tuple] = {}
        self.graph_key = None
        # The graphs' buffers, never handed to anyone else. The graphs share them: they run one
        # at a time on one stream and none keeps a value there from one launch to the next.
        self.graph_pool = cp.cuda.MemoryPool()
        self.cache: KVCache | None = None
        self.logits: cp.ndarray | None = None  # what the last token was drawn from (valid until the next step)

    @property
    def nbytes(self) -> int:
        """Device memory this decoder holds beyond the ops' pool accounting: the graphs' buffers."""
        return self.graph_pool.total_bytes()

    @contextlib.contextmanager
    def _on_device(self, what: str):
        """Run on the decoder's stream; CUDA failures become WorkerError, and after VRAM_OOM the
        pool's cached blocks go back to the device (M0-W-1021: partial allocations freed)."""
        try:
            with self.stream, cuda_errors(what):
                yield
        except WorkerError as e:
            if e.code is ErrorCode.VRAM_OOM:
                self.ops.release_scratch()
            raise

    def _sample_and_commit(self, logits: cp.ndarray) -> None:
        state = self.ops.state
        kernels.repetition_penalty(logits, self.history, state[2:3], self.mask, self.fparams)
        kernels.sample(logits, self.fparams, self.iparams, state, self.sample_scratch)
        kernels.commit_token(state, self.history)

    def start(self, prompt_ids: list[int], params: SamplingParams, seed: int, cache: KVCache) -> int:
        """Prefill the prompt into cache and return the first generated token id. Each whole
        chunk before the last is one launch of the FULL_CHUNK graph, the last one launch of its
        bucket's graph (see `graph_rows`); with no buckets (`prefill_buckets = ()`) every chunk
        runs op by op."""
        n = len(prompt_ids)
        if not 0 < n <= cache.n_ctx:
            raise ValueError(f"a prompt of {n} tokens does not fit a cache of {cache.n_ctx}")
        ids = np.asarray(prompt_ids, np.int64)
        if ids.min() < 0 or ids.max() >= self.mask.size:  # the graphs' embedding does not check them
            raise WorkerError(ErrorCode.INVALID_REQUEST, f"token id outside the vocabulary of {self.mask.size}")
        with self._on_device("prefill"):
            self._bind(cache)
            self.fparams.set(np.array([params.temperature, params.top_p, params.min_p, params.repetition_penalty],
                                      np.float32))
            self.iparams.set(np.array([params.top_k, seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], np.uint32))
            self.history[:n].set(ids.astype(np.int32))
            last = (n - 1) // PREFILL_CHUNK * PREFILL_CHUNK  # where the last chunk begins
            whole_chunk_graph = bool(last and self.prefill_buckets)
            if whole_chunk_graph:
                # Each replay reads its chunk at state[0] and moves it one chunk on, to `last`.
                self.ops.set_state(0, 0, n)
                for _ in range(0, last, PREFILL_CHUNK):
                    self._launch(FULL_CHUNK)
                self.ops.state_changed_on_device()
            with self.ops.logits_on_device():
                if not whole_chunk_graph:
                    for begin in range(0, last, PREFILL_CHUNK):
                        self.adapter.forward(prompt_ids[begin:begin + PREFILL_CHUNK], begin, cache)
                rows = self.graph_rows(n - last, last)
                if rows is None:
                    self.logits = cp.ascontiguousarray(self.adapter.forward(prompt_ids[last:], last, cache))
            if rows is None:
                self.ops.set_state(n - 1, 0, n)
                self._sample_and_commit(self.logits)
            else:
                # The decode step reads its token and position from state, a chunk its first position.
                position, token = (n - 1, prompt_ids[-1]) if rows == 1 else (last, 0)
                self.ops.set_state(position, token, n)
                self._launch(rows)
            self.ops.state_changed_on_device()
            return self._read_token()

    def record_graphs(self, cache: KVCache) -> None:
        """Record every graph (the decode step's, each bucket's and, where the cache holds more
        than a chunk, the whole chunk's) anew for cache now, so that no request pays for a
        recording while cache and the history stay where they are."""
        with self._on_device("recording the graphs"):
            self._bind(cache)
            self.graph_key = None
            for rows in (1, *(rows for rows in self.prefill_buckets if rows <= PREFILL_CHUNK)):
                self._graph(rows)
            if self.prefill_buckets and cache.n_ctx > PREFILL_CHUNK:
                self._graph(FULL_CHUNK)

    def _bind(self, cache: KVCache) -> None:
        """Work in cache, with a history as long."""
        self.cache = cache
        if self.history.size < cache.n_ctx:
            self.history = cp.zeros(cache.n_ctx, np.int32)

    def graph_rows(self, n_tokens: int, first: int = 0) -> int | None:
        """The graph a last chunk of n_tokens from position `first` runs in: 1 (the decode step)
        for one token, else the smallest of `prefill_buckets` that holds it and whose padding
        still lies inside the cache (past its end a padding row would wrap onto position 0's
        slot); None: op by op."""
        if not self.prefill_buckets:
            return None
        if n_tokens == 1:
            return 1
        return next((rows for rows in self.prefill_buckets
                     if n_tokens <= rows <= PREFILL_CHUNK and first + rows <= self.cache.n_ctx), None)

    def next(self) -> int:
        """Decode one more token (one graph replay) and return its id."""
        with self._on_device("decode step"):
            self._launch(1)
            self.ops.state_changed_on_device()
            return self._read_token()

    def _launch(self, rows: int | str) -> None:
        """Replay the graph of `rows` rows (or FULL_CHUNK's)."""
        graph, self.logits = self._graph(rows)
        graph.launch(self.stream)

    def _graph(self, rows: int | str) -> tuple:
        """(graph, its logits) of `rows` rows, recorded first where it is missing; where this cache
        or history is new to the decoder, every graph is dropped first (and recorded anew, lazily)."""
        key = (*self.cache.pointers(), self.cache.n_ctx, self.history.data.ptr)
        if self.graph_key != key:
            self.graphs.clear()
            self.logits = None
            self.graph_pool.free_all_blocks()
            self.graph_key = key
        if rows not in self.graphs:
            self.graphs[rows] = self._record(rows)
        return self.graphs[rows]

    def _record(self, rows: int | str) -> tuple:
        """Record a step of `rows` tokens and return (graph, its logits). One row: the decode step,
        the token state[1] at position state[0]. More: a prompt's chunk from position state[0],
        padded to `rows` past the prompt's length state[2], whose last token gives the logits;
        the position then moves to that token. Then the penalty, the draw and the commit.
        FULL_CHUNK: a whole chunk (PREFILL_CHUNK prompt tokens) from position state[0], which
        then moves past it; nothing is drawn (its logits are never read)."""
        ops = self.ops
        full = rows == FULL_CHUNK
        if full:
            rows = PREFILL_CHUNK
        ids = ops.state[1:2] if rows == 1 else self.chunk_ids[:rows]
        with (cp.cuda.using_allocator(self.graph_pool.malloc), ops.capturing(ids),
              kernels.programmatic_launch(rows <= PDL_MAX_ROWS)):
            self.stream.begin_capture()
            try:
                if rows > 1:
                    kernels.chunk_ids(self.history, ops.state, ids)
                # In capture mode only the number of tokens counts: ids and positions are read on the device.
                logits = self.adapter.forward([0] * rows, 0, self.cache).reshape(-1)
                if full:
                    kernels.chunk_done(ops.state, rows)
                else:
                    if rows > 1:
                        kernels.prefill_done(ops.state)
                    self._sample_and_commit(logits)
            finally:
                graph = self.stream.end_capture()
        return graph, logits

    def _read_token(self) -> int:
        """The one device-to-host copy of a step: 4 bytes into pageable memory (no pinned or
        mapped host memory anywhere, M0-SYS-2.2.1); it also waits for the step, so a kernel
        fault surfaces here as CUDA_ERROR."""
        return int(self.ops.state[1:2].get(stream=self.stream)[0])
