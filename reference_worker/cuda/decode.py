"""Token generation with everything on the GPU: prefill, sampling, and the decode step replayed
as one CUDA graph, so each token costs one graph launch and one 4-byte copy to the host.

The graph holds the adapter's own forward pass (recorded with the ops in capture mode, which
read the token and position from `ops.state`), then the repetition penalty and the sampler
(sampling.cu, the semantics of sampler.py), then `commit_token`, which appends the chosen id to
the history and advances the position. Replaying it therefore needs no new arguments. A graph is
tied to the KV cache it was recorded with (keyed by its pointers): the engine's one cache,
allocated at load, so the graph is recorded by the first request's second token and replayed
by every request after it.
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
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.graph = None
        self.graph_key = None
        self.graph_pool = cp.cuda.MemoryPool()  # the graph's buffers, never handed to anyone else
        self.cache: KVCache | None = None

    @property
    def nbytes(self) -> int:
        """Device memory this decoder holds beyond the ops' pool accounting: the graph's buffers."""
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
        """Prefill the prompt into cache and return the first generated token id."""
        n = len(prompt_ids)
        if not 0 < n <= cache.n_ctx:
            raise ValueError(f"a prompt of {n} tokens does not fit a cache of {cache.n_ctx}")
        self.cache = cache
        with self._on_device("prefill"):
            if self.history.size < cache.n_ctx:
                self.history = cp.zeros(cache.n_ctx, np.int32)
            self.fparams.set(np.array([params.temperature, params.top_p, params.min_p, params.repetition_penalty],
                                      np.float32))
            self.iparams.set(np.array([params.top_k, seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], np.uint32))
            self.history[:n].set(np.asarray(prompt_ids, np.int32))
            with self.ops.logits_on_device():
                for begin in range(0, n, PREFILL_CHUNK):
                    logits = self.adapter.forward(prompt_ids[begin:begin + PREFILL_CHUNK], begin, cache)
            self.ops.set_state(n - 1, 0, n)
            self._sample_and_commit(cp.ascontiguousarray(logits))
            self.ops.state_changed_on_device()
            return self._read_token()

    def next(self) -> int:
        """Decode one more token (one graph replay) and return its id."""
        with self._on_device("decode step"):
            key = (*self.cache.pointers(), self.cache.n_ctx, self.history.data.ptr)
            if self.graph_key != key:
                self._record()
                self.graph_key = key
            self.graph.launch(self.stream)
            self.ops.state_changed_on_device()
            return self._read_token()

    def _record(self) -> None:
        """Record one decode step: forward at (state[1], state[0]), sample, commit."""
        self.graph = None
        self.graph_pool.free_all_blocks()
        position = int(self.ops.state[0].get())  # the graph reads it from state; used only for the cache check
        with cp.cuda.using_allocator(self.graph_pool.malloc), self.ops.capturing():
            self.stream.begin_capture()
            try:
                logits = self.adapter.forward([0], position, self.cache)
                self._sample_and_commit(logits.reshape(-1))
            finally:
                self.graph = self.stream.end_capture()

    def _read_token(self) -> int:
        """The one device-to-host copy of a step: 4 bytes into pageable memory (no pinned or
        mapped host memory anywhere, M0-SYS-2.2.1); it also waits for the step, so a kernel
        fault surfaces here as CUDA_ERROR."""
        return int(self.ops.state[1:2].get(stream=self.stream)[0])
