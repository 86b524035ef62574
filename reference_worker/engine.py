"""Engine and Generation: the only API the server uses (reference_worker/README.md).

`Engine.load` validates and maps the GGUF, picks the adapter for its architecture, loads the
weights onto a backend and allocates the KV cache, once, as llama.cpp does; `Engine.generate`
checks the request against the context length and the positions that cache holds, and returns
a `Generation` that takes the cache, prefills on the first step and then decodes one token per
step until max_tokens, an end-of-generation token, a stop sequence or a cancel. M0 runs one job
at a time, so one cache serves every request in turn; it is never freed while the worker runs.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from reference_worker import ops_numpy
from reference_worker.adapter import PREFILL_CHUNK, CacheShape
from reference_worker.errors import ErrorCode, WorkerError, insufficient_vram
from reference_worker.gguf_file import ADAPTER_FAMILIES, GGUFFile
from reference_worker.gpt2 import GPT2Adapter
from reference_worker.gpt_oss import GptOssAdapter
from reference_worker.llama import LlamaAdapter
from reference_worker.sampler import Sampler, SamplingParams, new_seed
from reference_worker.tokenizer import ByteVocabulary, StreamDecoder, Tokenizer
from reference_worker.tokenizer_hf import FILE_NAME as TOKENIZER_JSON
from reference_worker.tokenizer_hf import HFJsonTokenizer

__all__ = ["Engine", "Generation", "SamplingParams", "TokenStep"]

ADAPTERS = {"llama": LlamaAdapter, "gpt2": GPT2Adapter, "gpt-oss": GptOssAdapter}  # M0-W-1213/1215: family -> class


@dataclass(frozen=True)
class TokenStep:
    """One generated token: its index in the output, its id, and the complete UTF-8 it adds."""

    index: int
    token_id: int
    text: str


def _backend_module(backend: str, device: int) -> ModuleType:
    """The module of the backend's ops (its kv_cache_bytes sizes the cache before anything loads)."""
    if backend == "numpy":
        return ops_numpy
    if backend == "cuda":
        from reference_worker.cuda import require_cupy

        require_cupy(device)  # WorkerError(CUDA_ERROR) without CuPy or without the device
        from reference_worker.cuda import ops as cuda_ops

        return cuda_ops
    raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"unknown backend {backend!r}; use 'numpy' or 'cuda'")


def _open_backend(module: ModuleType, gguf: GGUFFile, device: int, kv_bytes: int, vram_budget_bytes: int | None,
                  progress: Callable[[float], None]) -> Any:
    """The ops module or object the adapter computes with (ops_numpy.py documents the op set)."""
    if module is ops_numpy:
        return ops_numpy
    # M0-W-1020: startup needs room beside the weights for the KV cache and the scratch.
    try:
        return module.CudaOps(gguf, device=device, reserve_bytes=module.SCRATCH_RESERVE_BYTES + kv_bytes,
                              vram_budget_bytes=vram_budget_bytes, on_progress=progress)
    except WorkerError as e:
        if e.code is not ErrorCode.INSUFFICIENT_VRAM:
            raise
        raise WorkerError(e.code, f"{e.message}; that is the weights, a KV cache of {kv_bytes} bytes and "
                          f"{module.SCRATCH_RESERVE_BYTES} bytes of scratch", e.details) from e


def _cache_positions(shape: CacheShape, limit: int, budget: int | None, kv_cache_bytes: Callable[..., int],
                     device: int, model_path: Path) -> int:
    """Positions of the KV cache allocated at startup: limit, or fewer when the --kv-cache-size-mb
    budget holds fewer; INSUFFICIENT_VRAM (M0-W-1020) when it cannot hold one."""
    if budget is None:
        return limit
    positions = shape.positions_within(budget, limit, kv_cache_bytes)
    if positions == 0:
        one = shape.nbytes(1, kv_cache_bytes)
        raise insufficient_vram(one, budget, device, model_path,
                                f"the --kv-cache-size-mb budget of {budget} bytes cannot hold one position of the "
                                f"KV cache ({one} bytes)")
    return positions


def _open_tokenizer(gguf: GGUFFile, tokenizer_json: str | Path | None) -> ByteVocabulary:
    """M0-W-1360: hf-json when a tokenizer.json is named or lies beside the model, else the
    GGUF's own vocabulary (gguf-bpe)."""
    path = gguf.path.parent / TOKENIZER_JSON if tokenizer_json is None else Path(tokenizer_json)
    if tokenizer_json is None and not path.is_file():
        return Tokenizer.from_gguf(gguf)
    return HFJsonTokenizer.from_file(path, gguf.tensor("token_embd.weight").shape[0], gguf.metadata)


def _host_tokens(adapter: Any, prompt_ids: list[int], params: SamplingParams, seed: int, cache: Any) -> Iterator[int]:
    """Token ids from the adapter's logits and the host sampler; each forward runs on demand."""
    sampler = Sampler(params, seed)
    history = list(prompt_ids)
    for start in range(0, len(history), PREFILL_CHUNK):
        logits = adapter.forward(history[start:start + PREFILL_CHUNK], start, cache)
    while True:
        history.append(sampler.sample(logits, history))
        yield history[-1]
        logits = adapter.forward(history[-1:], len(history) - 1, cache)


def _device_tokens(decoder: Any, prompt_ids: list[int], params: SamplingParams, seed: int, cache: Any) -> Iterator[int]:
    """Token ids from a backend that samples on the device (cuda/decode.py)."""
    yield decoder.start(prompt_ids, params, seed, cache)
    while True:
        yield decoder.next()


class Engine:
    """A loaded model on one backend. Make one with `Engine.load`."""

    def __init__(self, gguf: GGUFFile, ops: ModuleType | Any, adapter: Any, tokenizer: ByteVocabulary,
                 cache: Any) -> None:
        self.gguf = gguf
        self.ops = ops
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.cache = cache  # the KV cache every request uses in turn (module doc)
        self._cache_lock = threading.Lock()
        self._cache_holder: Generation | None = None
        self.backend: str = ops.name
        self.model_name: str = gguf.name
        self.architecture: str = gguf.architecture
        self.quant_kind: str = gguf.quant_kind
        self.tokenizer_kind: str = tokenizer.kind
        self.vocab_size: int = adapter.hp.n_vocab
        self.context_length: int = adapter.hp.n_ctx

    @classmethod
    def load(cls, path: str | Path, backend: str = "numpy", device: int = 0, kv_cache_size_mb: int | None = None,
             vram_budget_bytes: int | None = None, tokenizer_json: str | Path | None = None,
             max_positions: int | None = None, on_progress: Callable[[int], None] = lambda percent: None) -> Engine:
        """Load the model at path onto backend and allocate its KV cache; on_progress gets 0, 25,
        50, 75 and 100.

        The cache holds the model's context length, or max_positions when fewer (the most a
        request may need: --max-tokens-in + --max-tokens-out), or what kv_cache_size_mb MiB hold
        when fewer still. tokenizer_json names the hf-json tokenizer's file (None: tokenizer.json
        beside the model when there is one, else the GGUF's own vocabulary).

        Raises WorkerError: MODEL_LOAD_FAILED, INSUFFICIENT_VRAM (also for a kv_cache_size_mb
        that cannot hold one position), CUDA_ERROR.
        """
        on_progress(0)
        gguf = GGUFFile.open(path)
        adapter_class = ADAPTERS[ADAPTER_FAMILIES[gguf.architecture]]
        tokenizer = _open_tokenizer(gguf, tokenizer_json)
        hp = adapter_class.hparams_class.from_gguf(gguf)
        shape = adapter_class.cache_shape(hp)
        module = _backend_module(backend, device)
        limit = hp.n_ctx if max_positions is None else min(hp.n_ctx, max_positions)
        kv_cache_budget = None if kv_cache_size_mb is None else kv_cache_size_mb * 2**20
        positions = _cache_positions(shape, limit, kv_cache_budget, module.kv_cache_bytes, device, gguf.path)
        kv_bytes = shape.nbytes(positions, module.kv_cache_bytes)
        milestones = [25, 50, 75]

        def progress(fraction: float) -> None:
            """Report each milestone once, whichever loader (weight copy, adapter) reaches it."""
            while milestones and fraction * 100 >= milestones[0]:
                on_progress(milestones.pop(0))

        ops = _open_backend(module, gguf, device, kv_bytes, vram_budget_bytes, progress)
        try:
            adapter = adapter_class(gguf, ops, progress)
            if tokenizer.vocab_size != adapter.hp.n_vocab:
                raise WorkerError(ErrorCode.MODEL_LOAD_FAILED, f"the tokenizer has {tokenizer.vocab_size} tokens "
                                  f"but the token table {adapter.hp.n_vocab} rows")
            try:
                cache = adapter.new_cache(positions)
            except WorkerError as e:
                if e.code is not ErrorCode.VRAM_OOM:
                    raise
                raise insufficient_vram(kv_bytes, e.details.get("available_bytes"), device, gguf.path,
                                        f"the KV cache of {positions} positions ({kv_bytes} bytes) does not fit "
                                        f"beside the weights: {e.message}") from e
        except BaseException:
            getattr(ops, "close", lambda: None)()  # give device memory back before reporting
            raise
        progress(1.0)
        on_progress(100)
        return cls(gguf, ops, adapter, tokenizer, cache)

    @property
    def resident(self) -> bool:
        return bool(getattr(self.ops, "resident", False))

    @property
    def vram_bytes_used(self) -> int:
        return int(getattr(self.ops, "vram_bytes_used", 0))

    @property
    def sm(self) -> int | None:
        return getattr(self.ops, "sm", None)

    @property
    def cuda_runtime_version(self) -> str | None:
        return getattr(self.ops, "cuda_runtime_version", None)

    def check_residency(self) -> bool:
        """M0-W-1012: whether every weight is still in device memory (always False on numpy)."""
        check = getattr(self.ops, "check_residency", None)
        return bool(check()) if check else False

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def score(self, token_ids: list[int]) -> np.ndarray:
        """Teacher-forced logits: row i holds the logits that predict token_ids[i + 1]."""
        cache = self.adapter.new_cache(len(token_ids))
        try:
            return np.concatenate([
                self.adapter.forward(token_ids[start:start + PREFILL_CHUNK], start, cache, all_logits=True)
                for start in range(0, len(token_ids), PREFILL_CHUNK)])
        finally:
            cache.close()

    @property
    def kv_cache_positions(self) -> int:
        """Positions the KV cache holds: the most prompt + max_tokens a request may need."""
        return self.cache.n_ctx

    def generate(self, prompt: str, max_tokens: int, params: SamplingParams = SamplingParams()) -> Generation:
        """Start generating up to max_tokens after prompt; the Generation holds the KV cache until
        it ends or is closed.

        Raises WorkerError(VRAM_OOM) before any work when the prompt and max_tokens do not fit
        the context length or the KV cache, INVALID_REQUEST for an empty prompt, INTERNAL while
        another Generation holds the cache (M0 runs one job at a time).
        """
        prompt_ids = self.tokenize(prompt)
        if not prompt_ids:
            raise WorkerError(ErrorCode.INVALID_REQUEST, "the prompt has no tokens")
        if max_tokens < 0:
            raise WorkerError(ErrorCode.INVALID_REQUEST, "max_tokens must be >= 0")
        needed = len(prompt_ids) + max_tokens
        details = {"prompt_tokens": len(prompt_ids), "max_tokens": max_tokens, "context_length": self.context_length}
        if needed > self.context_length:
            raise WorkerError(ErrorCode.VRAM_OOM, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) "
                              f"exceeds the context length {self.context_length}", details)
        # M0-W-1011 tracks the KV cache "per inference request" (spec line 304): the cache is
        # allocated at startup (lines 636, 1005-1052: one auto-calculated size, in every model's
        # footprint) and each request takes it, checked here against its positions, ending with
        # VRAM_OOM before any work when it does not fit (M0-W-1021, lines 375-380); /health
        # counts it in vram_bytes_used.
        if needed > self.kv_cache_positions:
            cache_bytes = self.adapter.kv_cache_bytes(needed)
            raise WorkerError(ErrorCode.VRAM_OOM, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) "
                              f"need a KV cache of {cache_bytes} bytes; the one allocated at startup holds "
                              f"{self.kv_cache_positions} positions in {self.cache.nbytes} bytes",
                              {**details, "required_bytes": cache_bytes, "available_bytes": self.cache.nbytes,
                               "kv_cache_positions": self.kv_cache_positions})
        seed = new_seed() if params.seed is None else params.seed
        generation = Generation(self, prompt_ids, max_tokens, params, seed, self.cache)
        with self._cache_lock:
            if self._cache_holder is not None:
                raise WorkerError(ErrorCode.INTERNAL, "the KV cache is held by a generation that has not ended")
            self._cache_holder = generation
        return generation

    def _release_cache(self, generation: Generation) -> None:
        """Generation's end: the cache is free for the next request (its contents are not reset:
        each request writes its positions before it reads them)."""
        with self._cache_lock:
            if self._cache_holder is generation:
                self._cache_holder = None

    def close(self) -> None:
        self.cache.close()
        close = getattr(self.ops, "close", None)
        if close:
            close()


class Generation:
    """One request's tokens, produced by iterating; see Engine.generate."""

    def __init__(self, engine: Engine, prompt_ids: list[int], max_tokens: int, params: SamplingParams,
                 seed: int, cache: Any) -> None:
        self.seed = seed
        self.prompt_token_count = len(prompt_ids)
        self.stop_reason: str | None = None
        self._engine = engine
        self._prompt_ids = prompt_ids
        self._max_tokens = max_tokens
        self._params = params
        self._cache = cache
        self._cancelled = threading.Event()
        self._closed = False

    def cancel(self) -> None:
        """Stop before the next token; safe to call from another thread."""
        self._cancelled.set()

    def close(self) -> None:
        """Give the KV cache back to the engine; idempotent."""
        if not self._closed:
            self._closed = True
            self._engine._release_cache(self)

    def __iter__(self) -> Iterator[TokenStep]:
        """The tokens, once; the KV cache goes back to the engine when they end, however."""
        if self._closed:
            raise WorkerError(ErrorCode.INTERNAL, "generation is closed")
        try:
            yield from self._steps()
        finally:
            self.close()

    def _steps(self) -> Iterator[TokenStep]:
        engine = self._engine
        decoder_for = getattr(engine.ops, "decoder", None)
        source = _device_tokens if decoder_for else _host_tokens
        tokens = source(decoder_for(engine.adapter) if decoder_for else engine.adapter,
                        self._prompt_ids, self._params, self.seed, self._cache)
        decoder = StreamDecoder(engine.tokenizer)
        stops = _StopMatcher(self._params.stop)
        for index in range(self._max_tokens):
            if self._cancelled.is_set():
                self.stop_reason = "cancelled"
                return
            token_id = next(tokens)
            if token_id in engine.tokenizer.eos_ids:
                self.stop_reason = "eos"
                # The end token itself carries no text; text held back for a stop sequence does.
                if rest := stops.finish():
                    yield TokenStep(index, token_id, rest)
                return
            last = index == self._max_tokens - 1
            text, matched = stops.push(decoder.push(token_id), final=last)
            yield TokenStep(index, token_id, text)
            if matched:
                self.stop_reason = "stop_sequence"
                return
        self.stop_reason = "max_tokens"


class _StopMatcher:
    """Cuts the output at the first stop sequence, holding back text that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""

    def push(self, piece: str, final: bool = False) -> tuple[str, bool]:
        """The text safe to emit now, and whether a stop sequence was found."""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            text, self.pending = self.pending[:min(hits)], ""
            return text, True
        keep = 0 if final else max((n for s in self.stops for n in range(1, len(s))
                                    if self.pending.endswith(s[:n])), default=0)
        text, self.pending = self.pending[:len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return text, False

    def finish(self) -> str:
        """Everything still held back, at the end of generation."""
        return self.push("", final=True)[0]
