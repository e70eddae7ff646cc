"""The batching engine: iteration-level (continuous) batching over a slot-based KV cache, in one worker thread.

Every step runs one forward over a flat batch of tokens: one token for each sequence that is decoding plus up to
`prefill_chunk` prompt tokens of sequences being prefilled, so new requests join between steps, finished ones leave
at once, and a long prompt never stalls running decodes for more than one chunk. The forward is written out over the
Hugging Face model's own modules (Llama family: llama, mistral, qwen2, qwen3); on the 2-core CPU it beats both
per-request `generate` and transformers' own continuous batching (`generate_batch`) by a wide margin.

Admission from the queue is by priority (interactive > brainstorm > scheduled), round-robin across conversations
within a class; see AdmissionQueue. torch and transformers load lazily, in the worker.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import queue
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from generation.decode_graphs import DecodeGraphs, length_bias
from generation.local import (
    IncrementalDetokenizer,
    LocalGenerator,
    _deadline,
    _Job,
    _short,
    resolve_device,
    sample_rows,
    validate_request,
)
from generation.models import ModelSpec
from generation.types import (
    ChatMessage,
    Chunk,
    FinishReason,
    GenerationError,
    GenerationRequest,
    Health,
    ModelUnavailable,
    Priority,
    RequestTooLarge,
)

_log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

# How decode-only steps run: "auto" replays CUDA graphs on a GPU (eager elsewhere), "eager" runs the graphs'
# fixed-shape step without capturing it, "off" always runs the engine's own step.
DECODE_GRAPHS = ("auto", "eager", "off")
# The KV cache grows in blocks of this many positions and of this many slots (rows), exactly to what is in use.
_CACHE_BLOCK = 64
_ROW_BLOCK = 4
# The batch size oneDNN lays packed bfloat16 weights out for; they still take any number of rows.
_PACK_ROWS_HINT = 32
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Linear weights as loaded, or int8 with one scale per output channel (CPU only; elsewhere it is ignored).
QUANTIZE = ("none", "int8")
# glibc: blocks from this size up are mmapped, so a freed KV layer or load-time copy goes back to the OS at once.
_MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3

T = TypeVar("T", bound=Hashable)


class AdmissionQueue(Generic[T]):
    """Who gets the next free slot: the lowest priority value first, and within one priority the conversations
    take turns (round-robin), so one busy conversation cannot starve another. Pure bookkeeping, no locking."""

    def __init__(self) -> None:
        # priority -> conversation key -> its waiting items, oldest first; dict order is the turn order.
        self._classes: dict[int, OrderedDict[str, deque[T]]] = {}
        self._where: dict[T, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: object) -> bool:
        return item in self._where

    def push(self, item: T, priority: int, key: str) -> None:
        """Queue an item; a conversation that had nothing waiting joins the end of its class's turn order."""
        if item in self._where:
            raise ValueError("item is already queued")
        turns = self._classes.setdefault(int(priority), OrderedDict())
        turns.setdefault(key, deque()).append(item)
        self._where[item] = (int(priority), key)

    def pop(self, max_priority: int | None = None) -> T | None:
        """The next item to admit, or None; its conversation moves to the end of the turn order.

        With max_priority, only items of that priority value or more urgent (lower) are considered.
        """
        for priority in sorted(self._classes):
            if max_priority is not None and priority > max_priority:
                break
            turns = self._classes[priority]
            if not turns:
                continue
            key, waiting = turns.popitem(last=False)
            item = waiting.popleft()
            if waiting:
                turns[key] = waiting
            del self._where[item]
            return item
        return None

    def remove(self, item: T) -> bool:
        """Take an item out (an abort); False when it is not queued."""
        place = self._where.pop(item, None)
        if place is None:
            return False
        priority, key = place
        turns = self._classes[priority]
        turns[key].remove(item)
        if not turns[key]:
            del turns[key]
        return True

    def has(self, priority: int) -> bool:
        """Is anything of exactly this priority waiting?"""
        return bool(self._classes.get(int(priority)))

    def order(self) -> list[T]:
        """Every queued item in the order pop() would hand them out if nothing else arrived."""
        ordered: list[T] = []
        for priority in sorted(self._classes):
            lanes = [list(waiting) for waiting in self._classes[priority].values()]
            depth = max((len(lane) for lane in lanes), default=0)
            for turn in range(depth):
                ordered.extend(lane[turn] for lane in lanes if turn < len(lane))
        return ordered


@dataclass(eq=False)
class _EngineJob(_Job):
    prompt: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    # max_new_tokens, lowered to what fits when the request allows it.
    max_new_tokens: int = 0
    queue_position: int | None = None
    # Set while a preempted request waits for a slot again: where it stopped, to continue from there.
    paused: _Sequence | None = None


@dataclass(eq=False)
class _Reading(_Job):
    """A request to read texts (BatchingEngine.read): no tokens are generated; `vectors` is filled in order."""

    texts: list[str] = field(default_factory=list)
    skip_last: int = 2
    layers: int = 0  # the layers to run, from skip_last once the model is loaded
    prompts: list[list[int]] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)


@dataclass(eq=False)
class _Sequence:
    """A request holding a slot: its prompt, how much of it is in the cache, and its sampling state."""

    job: _EngineJob
    request: GenerationRequest
    slot: int
    detokenizer: IncrementalDetokenizer
    generator: Any
    deadline: float
    admitted: float
    prefilled: int = 0
    next_token: int | None = None
    # Preemption folds generated tokens into job.prompt and recomputes their cache on resumption: `folded` of them
    # are in the prompt now, and `resume_token` is the sampled token that waits until that prefill is done.
    folded: int = 0
    resume_token: int | None = None

    @property
    def decoding(self) -> bool:
        return self.next_token is not None

    @property
    def length(self) -> int:
        """Tokens in this slot's cache."""
        return self.prefilled + self.job.tokens - self.folded - (1 if self.next_token is not None else 0)


class BatchingEngine(LocalGenerator):
    """Generator serving many requests at once with continuous batching (the default in-process engine).

    Memory is bounded by config: `max_batch` slots, each holding at most `max_seq_len` tokens (prompt plus new
    tokens; also capped by the model's context), so the KV cache never exceeds max_batch * max_seq_len tokens. The
    cache is sized to the slots in use and the longest sequence in them (in blocks), shrinks when they end and is
    dropped when the engine goes idle. At most max_batch + max_queue requests are accepted at once; beyond that
    stream() raises GeneratorBusy.

    dtype "auto" picks bfloat16 on CUDA and on a CPU with native bfloat16 (AMX or AVX512-BF16), else
    fallback_dtype. On a CPU, bfloat16 Linear weights are pre-packed for oneDNN once at load, which makes them fast.
    quantize "int8" instead stores the Linear weights (lm_head too) as int8 and runs them as dynamic int8 matrix
    products (CPU only): half the weight bytes per token and faster products, but its greedy tokens agree with
    bfloat16's less often (measured in docs/serve.md), so it is off unless asked for. decode_graphs: see
    DECODE_GRAPHS (on a GPU, decode-only steps replay CUDA graphs).

    It reuses LocalGenerator's model loading, asyncio bridge, warmup, abort and close, and replaces the worker loop.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch: int = 16,
        max_queue: int = 64,
        max_seq_len: int = 2048,
        prefill_chunk: int = 256,
        interactive_reserve: int | None = None,
        fallback_dtype: str = "float32",
        quantize: str = "none",
        threads: int = 0,
        decode_graphs: str = "auto",
    ) -> None:
        _check_decode_graphs(decode_graphs)
        self._decode_graphs = decode_graphs
        if max_batch < 1 or max_queue < 0 or max_seq_len < 2 or prefill_chunk < 1:
            raise ValueError("max_batch, max_seq_len and prefill_chunk must be positive and max_queue not negative")
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
        self._quantize = quantize
        if dtype not in DTYPES or fallback_dtype not in DTYPES[1:]:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r}, fallback {fallback_dtype!r})")
        self._fallback_dtype = fallback_dtype
        # Slots only interactive requests may take, so a channel's command never waits behind a wall of drops
        # (admission has no preemption). Default: a quarter of the batch.
        self._reserve = max_batch // 4 if interactive_reserve is None else interactive_reserve
        if not 0 <= self._reserve < max_batch:
            raise ValueError("interactive_reserve must leave at least one slot for other requests")
        super().__init__(spec, device=device, dtype=dtype, max_queue=max_queue, threads=threads)
        self._max_batch = max_batch
        self._slots_total = max_batch
        self._max_seq_len = max_seq_len
        self._prefill_chunk = prefill_chunk
        self._waiting: AdmissionQueue[_EngineJob] = AdmissionQueue()
        self._slots: list[_Sequence | None] = [None] * max_batch
        self._runner: _SlotModel | None = None
        # One thread-count chooser per kind of step (_thread_bucket), made when the CPU thread count is known.
        self._step_threads: dict[int, _StepThreads] = {}
        self._timed: tuple[_StepThreads, int, int] | None = None  # (chooser, threads, tokens) of the running step
        self._reads: deque[_Reading] = deque()  # read() calls not finished yet, oldest first

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def running(self) -> int:
        """Requests holding a slot (prefilling or decoding)."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.started)

    @property
    def dtype(self) -> str:
        """The compute dtype: as configured, or what "auto" chose once the model is loaded."""
        return self._dtype_name

    @property
    def max_len(self) -> int | None:
        """Tokens one request may use (prompt plus new tokens), once the model is loaded."""
        if self._model is None:
            return None
        return min(self._max_seq_len, self._context_limit or self._max_seq_len)

    async def health(self) -> Health:
        """LocalGenerator's health, with the running batch in the detail once the model is loaded."""
        health = await super().health()
        if health.ok and self._runner is not None:
            weights = ", int8 weights" if self._runner.quantized else ""
            where = f"{self._device} ({self._dtype_name}{weights}){self._threads_note()}"
            detail = f"loaded on {where}; {self.running} running, {self.queue_depth} waiting"
            return Health(ok=True, detail=detail, model=health.model)
        return health

    async def close(self) -> None:
        await super().close()
        self._runner = None

    async def read(self, texts: Sequence[str], *, skip_last: int = 2) -> list[list[float]]:
        """How the model reads each text: the hidden state at the text's last token after all but the last
        `skip_last` layers, one vector of the model's width per text (no tokens are generated). A text longer than
        a slot keeps its end. Reads run between decode steps, a prompt slice at a time in slots no request holds,
        so requests already running are not paused for them."""
        if isinstance(texts, str):
            raise TypeError("read() takes a sequence of texts, not one string")
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job = _Reading(request=None, loop=loop, events=asyncio.Queue(), texts=list(texts), skip_last=skip_last)
        with self._lock:
            if self._closed:
                raise GenerationError("The generator is closed.")
            self._start_worker()
        self._inbox.put(job)
        try:
            item = await job.events.get()
        except asyncio.CancelledError:
            job.abort.set()
            raise
        if isinstance(item, GenerationError):
            raise type(item)(str(item))
        return job.vectors

    # -- the asyncio side ------------------------------------------------------------------------------------------

    def _new_job(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> _EngineJob:
        validate_request(request)
        return _EngineJob(request=request, loop=loop, events=asyncio.Queue(), deadline=_deadline(request))

    def _unqueue(self, job: _Job) -> None:
        if isinstance(job, _EngineJob):
            self._waiting.remove(job)

    # -- the worker thread -----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                idle = not any(self._slots) and not self._waiting and not self._reads
            try:
                items = [self._inbox.get()] if idle else []
                while True:
                    items.append(self._inbox.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if item is None:
                    self._shut_down()
                    return
                if isinstance(item, _Reading):
                    self._admit_reading(item)
                elif item.request is None:
                    self._post(item, self._ready())
                else:
                    self._enqueue(item)  # type: ignore[arg-type]
            self._end_expired()
            self._fill_slots()
            self._publish_positions()
            if self._reads:
                self._read_some()
            if any(self._slots):
                try:
                    self._step()
                except Exception as exc:  # a torch error or a bug: fail what is in flight, keep serving
                    _log.exception("a batching step failed; resetting the batch")
                    self._fail_running(_short(exc))
            elif self._runner is not None and self._runner.capacity and not self._reads:
                self._runner.release()
                _libc_call("malloc_trim", 0)
                _log.debug("idle: KV cache released")

    def _load(self) -> None:
        if self._dtype_name == "auto":
            import torch

            if self._quantize == "int8" and resolve_device(torch, self._device_setting) == "cpu":
                # int8 layers take and give float32; a float32 cache also batches faster than bfloat16 on a CPU
                # (32 at once: 297-359 against 257-274 tokens/s on the AVX-512 VM).
                self._dtype_name = "float32"
            else:
                self._dtype_name = "bfloat16" if native_bfloat16(torch, self._device_setting) else self._fallback_dtype
        _libc_call("mallopt", _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        super()._load()

    def _ready(self) -> ModelUnavailable | None:
        """Load the model and build the batched runner once; the error, if any, stays for health()."""
        try:
            self._ensure_loaded()
            if self._runner is None:
                self._runner = _SlotModel(
                    self._model,
                    self._max_batch,
                    self.max_len or self._max_seq_len,
                    pack=True,
                    quantize=self._quantize,
                    calibration=self._calibration_ids() if self._quantize == "int8" else (),
                    decode_graphs=self._decode_graphs,
                )
                gc.collect()  # hand the unpacked weights and load-time copies back to the OS
                _libc_call("malloc_trim", 0)
        except ModelUnavailable as exc:
            self._load_error = exc
            return exc
        except Exception as exc:
            _log.exception("loading %s failed", self.spec.path)
            self._load_error = ModelUnavailable(f"Could not load the model from {self.spec.path} ({_short(exc)}).")
            return self._load_error
        return None

    def _calibration_ids(self) -> list[list[int]]:
        """Token ids of a few short chats (the kind of text Chorus writes), for int8's activation ranges."""
        batches = []
        for messages in _CALIBRATION_CHATS:
            request = GenerationRequest(messages=messages)
            batches.append([int(token) for token in self._encode(request)[0].tolist()])
        return batches

    def _forget(self, job: _Job) -> None:
        with self._lock:
            if job.request is not None and self._jobs.get(job.request.request_id) is job:
                del self._jobs[job.request.request_id]

    def _enqueue(self, job: _EngineJob) -> None:
        """Tokenize a new request and queue it, or fail it at once when it can never fit."""
        request = job.request
        assert request is not None
        if job.cancelled:
            return
        problem: GenerationError | None = self._ready()
        if problem is None:
            try:
                job.prompt = [int(token) for token in self._encode(request)[0].tolist()]
            except Exception as exc:
                problem = GenerationError(f"The prompt could not be tokenized ({_short(exc)}).")
        limit = self.max_len or self._max_seq_len
        job.prompt_tokens = len(job.prompt)
        job.max_new_tokens = request.max_new_tokens
        if problem is None and len(job.prompt) + request.max_new_tokens > limit:
            if request.fit_max_new_tokens and len(job.prompt) < limit:
                job.max_new_tokens = limit - len(job.prompt)
            else:
                problem = RequestTooLarge(
                    f"The prompt of {len(job.prompt)} tokens + {request.max_new_tokens} new tokens exceeds the "
                    f"context / KV budget of {limit} tokens per request; shorten the prompt or ask for fewer tokens."
                )
        if problem is not None:
            self._forget(job)
            if not job.cancelled:
                self._post(job, problem)
            return
        with self._lock:
            expired = not job.cancelled and time.monotonic() >= job.deadline
            if expired:  # loading the model or tokenizing used up the budget
                job.started = True
        if expired:
            self._end_waiting(job, "time")
            return
        with self._lock:
            if not job.cancelled:
                self._waiting.push(job, request.priority, request.conversation_key)

    def _fill_slots(self) -> None:
        free = self._slots.count(None)
        for slot, occupant in enumerate(self._slots):
            if occupant is not None:
                continue
            with self._lock:
                job = self._waiting.pop(None if free > self._reserve else Priority.INTERACTIVE)
                if job is None:
                    break
                job.started = True
            free -= 1
            self._slots[slot] = self._resume(job, slot) if job.paused else self._start(job, slot)
        self._preempt_for_interactive()

    def _preempt_for_interactive(self) -> None:
        """A command waiting while every slot is taken pauses the least urgent, latest-admitted drop or
        brainstorm and takes its slot; the paused request is re-queued and later continues where it stopped."""
        while True:
            with self._lock:
                if not self._waiting.has(Priority.INTERACTIVE) or None in self._slots:
                    return
            victims = [seq for seq in self._running() if seq.request.priority > Priority.INTERACTIVE]
            if not victims:
                return
            victim = max(victims, key=lambda seq: (seq.request.priority, seq.admitted))
            self._pause(victim)
            with self._lock:
                job = self._waiting.pop(Priority.INTERACTIVE)
                assert job is not None
                job.started = True
            self._slots[victim.slot] = self._start(job, victim.slot)

    def _pause(self, seq: _Sequence) -> None:
        job = seq.job
        self._slots[seq.slot] = None
        if seq.next_token is not None:
            cached = seq.detokenizer.ids[:-1]  # the pending token is not in the cache yet
            job.prompt = job.prompt + cached[seq.folded :]
            seq.folded = len(cached)
            seq.resume_token, seq.next_token = seq.next_token, None
        seq.prefilled = 0
        job.paused = seq
        with self._lock:
            self._waiting.push(job, seq.request.priority, seq.request.conversation_key)
        _log.debug("paused %s for an interactive request", seq.request.request_id)

    def _resume(self, job: _EngineJob, slot: int) -> _Sequence:
        seq = job.paused
        assert seq is not None
        job.paused = None
        seq.slot = slot
        seq.admitted = time.monotonic()
        return seq

    def _end_expired(self) -> None:
        """Aborts and time budgets apply to waiting and paused requests too, without waiting for a slot."""
        now = time.monotonic()
        ended: list[tuple[_EngineJob, FinishReason]] = []
        with self._lock:
            for job in self._waiting.order():
                if job.paused is not None and job.abort.is_set():
                    ended.append((job, "abort"))
                elif now >= job.deadline:
                    ended.append((job, "time"))
                else:
                    continue
                self._waiting.remove(job)
                job.started = True  # from here on only the worker ends it (an abort now would answer twice)
        for job, reason in ended:
            self._end_waiting(job, reason)

    def _end_waiting(self, job: _EngineJob, reason: FinishReason) -> None:
        """End a request that holds no slot: a paused one with what it produced, a queued one with nothing."""
        seq = job.paused
        if seq is not None:
            job.paused = None
            self._finish(seq, reason)
            return
        self._forget(job)
        assert job.request is not None
        self._post(job, Chunk(request_id=job.request.request_id, finish_reason=reason, prompt_tokens=job.prompt_tokens))

    def _start(self, job: _EngineJob, slot: int) -> _Sequence:
        torch = self._torch
        request = job.request
        assert request is not None
        generator = None
        if request.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(request.seed)
        now = time.monotonic()
        return _Sequence(
            job=job,
            request=request,
            slot=slot,
            detokenizer=IncrementalDetokenizer(self._decode, request.stop),
            generator=generator,
            deadline=job.deadline,
            admitted=now,
        )

    def _publish_positions(self) -> None:
        with self._lock:
            order = self._waiting.order()
        for index, job in enumerate(order, start=1):
            if job.queue_position == index or job.paused is not None:
                continue
            job.queue_position = index
            eta = None if self._service_s is None else round(index * self._service_s / self._max_batch, 1)
            assert job.request is not None
            self._post(job, Chunk(request_id=job.request.request_id, queue_position=index, eta_s=eta))

    def _admit_reading(self, reading: _Reading) -> None:
        error = self._ready()
        if error is not None:
            self._post(reading, error)
            return
        assert self._runner is not None
        limit = self.max_len or self._max_seq_len
        reading.layers = len(self._runner.plan) - reading.skip_last
        if not 0 < reading.layers <= len(self._runner.plan):
            message = f"The model has {len(self._runner.plan)} layers; it cannot skip {reading.skip_last}."
            self._post(reading, GenerationError(message))
            return
        reading.prompts = [self._tokenizer(text)["input_ids"][-limit:] or [0] for text in reading.texts]
        self._reads.append(reading)

    def _read_some(self) -> None:
        """One forward of the oldest read() call's next prompts, each in a slot no request holds."""
        reading = self._reads[0]
        if reading.abort.is_set():
            self._reads.popleft()
            return
        free = [slot for slot, occupant in enumerate(self._slots) if occupant is None]
        if not free:
            return  # every slot is busy: the read waits for one
        assert self._runner is not None
        done = len(reading.vectors)
        batch: list[tuple[int, int, list[int], bool]] = []
        room = self._prefill_chunk
        for slot, prompt in zip(free, reading.prompts[done:], strict=False):
            if batch and len(prompt) > room:
                break
            batch.append((slot, 0, prompt, True))
            room -= len(prompt)
        try:
            # A read is a prompt slice: it runs on, and teaches, that kind of step's thread count.
            self._set_step_threads(sum(len(piece) for _, _, piece, _ in batch))
            started = time.perf_counter()
            states = self._runner.forward([], batch, layers=reading.layers)
            self._record_step_time(started)
        except Exception as exc:
            _log.exception("reading texts failed")
            self._reads.popleft()
            self._runner.release()
            self._post(reading, GenerationError(f"Reading failed ({_short(exc)})."))
            return
        reading.vectors.extend(row.tolist() for row in states)
        if len(reading.vectors) == len(reading.prompts):
            self._reads.popleft()
            self._post(reading, None)

    def _step(self) -> None:
        """One forward over every running sequence: one decode token each, plus a bounded slice of prompts."""
        now = time.monotonic()
        for seq in self._running():
            if seq.job.abort.is_set():
                self._finish(seq, "abort")
            elif now >= seq.deadline:
                self._finish(seq, "time")
        decoding = [seq for seq in self._running() if seq.decoding]
        prefills: list[tuple[_Sequence, int, list[int]]] = []
        room = self._prefill_chunk
        for seq in sorted((s for s in self._running() if not s.decoding), key=lambda s: s.admitted):
            if room <= 0:
                break
            piece = seq.job.prompt[seq.prefilled : seq.prefilled + room]
            prefills.append((seq, seq.prefilled, piece))
            room -= len(piece)
        if not decoding and not prefills:
            return
        done = [start + len(piece) == len(seq.job.prompt) for seq, start, piece in prefills]
        # A resumed request already holds its next token: its prefill needs no logits.
        ends = [end and seq.resume_token is None for (seq, _, _), end in zip(prefills, done, strict=True)]
        sampling = decoding + [seq for (seq, _, _), end in zip(prefills, ends, strict=True) if end]
        self._set_step_threads(len(decoding) + sum(len(piece) for _, _, piece in prefills))
        started = time.perf_counter()
        logits = self._forward(
            [(seq.slot, seq.next_token, seq.length) for seq in decoding],  # type: ignore[misc]
            [(seq.slot, start, piece, end) for (seq, start, piece), end in zip(prefills, ends, strict=True)],
        )
        self._record_step_time(started)
        for (seq, start, piece), complete in zip(prefills, done, strict=True):
            seq.prefilled = start + len(piece)
            if complete and seq.resume_token is not None:
                seq.next_token, seq.resume_token = seq.resume_token, None
        tokens = sample_rows(
            self._torch,
            logits,
            [seq.request for seq in sampling],
            [seq.generator for seq in sampling],
            [seq.detokenizer.ids if seq.request.repetition_penalty != 1.0 else () for seq in sampling],
        )
        for seq, token in zip(sampling, tokens, strict=True):
            self._accept(seq, token)

    def _record_step_time(self, started: float) -> None:
        """Tell the running step's thread-count chooser how long the step took per token."""
        if self._timed is not None:
            chooser, threads, tokens = self._timed
            chooser.record(threads, (time.perf_counter() - started) / tokens)

    def _set_step_threads(self, tokens: int) -> None:
        """Run the step on the CPU thread count that has lately been faster for steps of its kind (one token, a
        few, a prompt slice; _StepThreads), measured per token. Idle, two threads are a little faster; on a host
        whose cores are busy the threads of a parallel step spin while their partner is descheduled: batch-1 int8
        decode fell to 1.3 tokens/s on two threads at load 1.2-3.0, against 15.1 on one at load 7.5, and a busy
        VM's int8 TTFT went from 591-703 ms with prompts on two threads to 73-76 ms chosen (docs/benchmarks.md)."""
        self._timed = None
        if self._device != "cpu" or self._cpu_threads <= 1:
            return
        bucket = _thread_bucket(tokens)
        chooser = self._step_threads.get(bucket)
        if chooser is None or self._cpu_threads not in chooser.counts:
            # A lone user's decode tries one thread first, prompts and batches all of them (the old fixed policy).
            counts = (1, self._cpu_threads) if bucket == 1 else (self._cpu_threads, 1)
            chooser = self._step_threads[bucket] = _StepThreads(counts)
        threads = chooser.next()
        self._timed = (chooser, threads, tokens)
        if threads != self._torch.get_num_threads():
            self._torch.set_num_threads(threads)

    def _forward(self, decoding: list[tuple[int, int, int]], prefills: list[tuple[int, int, list[int], bool]]) -> Any:
        """The model call of one step (a seam for tests that inject a failure)."""
        assert self._runner is not None
        return self._runner.forward(decoding, prefills)

    def _running(self) -> list[_Sequence]:
        return [seq for seq in self._slots if seq is not None]

    def _accept(self, seq: _Sequence, token: int) -> None:
        job = seq.job
        if token in self._eos_ids:
            self._finish(seq, "stop")
            return
        job.tokens += 1
        delta = seq.detokenizer.add(token)
        if delta:
            self._post(job, Chunk(request_id=seq.request.request_id, text=delta, tokens=job.tokens))
        if seq.detokenizer.stopped:
            self._finish(seq, "stop")
        elif job.tokens >= job.max_new_tokens:
            self._finish(seq, "length")
        else:
            seq.next_token = token

    def _finish(self, seq: _Sequence, reason: FinishReason, error: str | None = None) -> None:
        if self._slots[seq.slot] is seq:
            self._slots[seq.slot] = None
        self._forget(seq.job)
        if reason != "error":
            self._note_service(time.monotonic() - seq.admitted)
        text = "" if reason == "error" else seq.detokenizer.flush()
        chunk = Chunk(
            request_id=seq.request.request_id,
            text=text,
            finish_reason=reason,
            error=error,
            tokens=seq.job.tokens,
            prompt_tokens=seq.job.prompt_tokens,
        )
        self._post(seq.job, chunk)

    def _fail_running(self, message: str) -> None:
        for seq in self._running():
            self._finish(seq, "error", error=message)
        if self._runner is not None:
            self._runner.release()

    def _shut_down(self) -> None:
        for seq in self._running():
            self._finish(seq, "abort")
        while self._reads:
            self._post(self._reads.popleft(), GenerationError("The generator is closed."))
        with self._lock:
            paused = [job.paused for job in self._waiting.order() if job.paused is not None]
        for seq in paused:
            self._finish(seq, "abort")
        self._runner = None


def _thread_bucket(tokens: int) -> int:
    """The kind of step whose thread count is chosen together: 1 (one user decoding), 2 (a few rows), 3 (many
    rows or a prompt slice). Within a kind, time per token compares fairly."""
    return 1 if tokens == 1 else 2 if tokens <= 16 else 3


class _StepThreads:
    """Which thread count one kind of CPU step runs on: the one whose recent steps took less time. Each count
    is tried `probe_steps` times first. After that the others get `probe_steps` steps again every `probe_every`
    steps, so a count that lost while the host was busy is taken back once it is idle, and the other way round.
    A probe that confirms the choice doubles the wait before the next one (up to 8x), since each probe of the
    slower count costs time; a changed choice resets it. A probe's steps replace what its count had measured
    before; otherwise times are moving averages."""

    def __init__(self, counts: Sequence[int], probe_every: int = 32, probe_steps: int = 2, weight: float = 0.3) -> None:
        self.counts = tuple(counts)
        self.probe_steps, self.weight = probe_steps, weight
        self.base_wait = self.wait = probe_every
        self.seconds: dict[int, float] = {}
        self.samples = dict.fromkeys(self.counts, 0)
        self.since_probe = 0
        self.probing: list[int] = []  # the counts still to run in this probe, one per step
        self.fresh: set[int] = set()  # probed counts whose next time replaces the old one
        self.chosen = self.counts[0]

    def best(self) -> int:
        return min(self.seconds, key=lambda count: self.seconds[count]) if self.seconds else self.counts[0]

    def next(self) -> int:
        for count in self.counts:
            if self.samples[count] < self.probe_steps:
                return count
        if not self.probing:
            best = self.best()
            if best != self.chosen:
                self.chosen, self.wait = best, self.base_wait
            if self.since_probe >= self.wait:
                others = [count for count in self.counts if count != best]
                self.probing = [count for count in others for _ in range(self.probe_steps + 1)]
                self.fresh = set(others)
                self.since_probe = 0
                self.wait = min(2 * self.wait, 8 * self.base_wait)  # reset above if the probe changes the choice
        if self.probing:
            return self.probing.pop()
        self.since_probe += 1
        return self.chosen

    def record(self, count: int, seconds: float) -> None:
        previous = self.seconds.get(count)
        if previous is None or count in self.fresh:
            self.seconds[count] = seconds
            self.fresh.discard(count)
        else:
            self.seconds[count] = previous + self.weight * (seconds - previous)
        self.samples[count] += 1


@functools.cache
def _libc() -> Any:
    """The C library, found once: find_library runs ldconfig, too slow for every idle moment. None when absent."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _libc_call(name: str, *args: int) -> None:
    """Call a glibc memory tuning function when there is one (Linux); elsewhere, do nothing."""
    function = getattr(_libc(), name, None)
    if function is not None:
        function(*args)


def native_bfloat16(torch: Any, device: str) -> bool:
    """Does this device run bfloat16 natively (CUDA; a CPU with AMX or AVX512-BF16)? What dtype "auto" asks."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return True
    cpu = getattr(torch, "cpu", None)
    return any(
        callable(check := getattr(cpu, name, None)) and bool(check())
        for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )


class _SlotModel:
    """A batched forward over a Llama-family Hugging Face model's own modules, with a slot-based KV cache.

    Keys and values live in one tensor per layer, [rows, kv_heads, capacity, head_dim]; a sequence owns one slot
    (row) and its tokens sit at their positions. Rows and capacity follow the slots in use and the longest sequence
    in them, rounded up to a block, and are resized one layer at a time, so a resize never holds two caches. Linear
    layers, norms and the MLP run on the flat batch of tokens; attention runs once for all decoding rows (a per-row
    length mask) and once per prompt slice (a causal mask offset by what is already cached). Grouped-query attention
    uses SDPA's enable_gqa instead of copies. With pack=True on a CPU in bfloat16, the model's Linear layers are
    replaced by oneDNN pre-packed ones (the model keeps working as a Hugging Face model).
    """

    def __init__(
        self,
        model: Any,
        max_batch: int,
        max_len: int,
        *,
        pack: bool = False,
        quantize: str = "none",
        calibration: Sequence[Sequence[int]] = (),
        decode_graphs: str = "auto",
    ) -> None:
        import torch

        _check_decode_graphs(decode_graphs)
        config = model.config
        model_type = getattr(config, "model_type", "?")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelUnavailable(
                f"The batching engine supports Llama-family models ({', '.join(SUPPORTED_MODEL_TYPES)}); this model "
                f"is {model_type!r}. Serve it with the simple LocalGenerator instead."
            )
        window = getattr(config, "sliding_window", None)
        if window and (model_type != "qwen2" or getattr(config, "use_sliding_window", False)):
            max_len = min(max_len, int(window))  # within the window, sliding attention equals full attention
        self.torch = torch
        self.sdpa = torch.nn.functional.scaled_dot_product_attention
        self.model = model
        self.layers = list(model.model.layers)
        attention = self.layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = attention.head_dim
        self.scale = attention.scaling
        self.qk_norm = hasattr(attention, "q_norm")
        self.max_batch = max_batch
        self.max_len = max_len
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.rows = 0
        self.capacity = 0
        self.keys: list[Any] = []
        self.values: list[Any] = []
        for layer in self.layers:
            _fuse_projections(torch, layer)
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.quantized = quantize == "int8" and _quantize_linears(torch, model, calibration)
        self.packed = not self.quantized and pack and _pack_linears(torch, model)
        # Packed bfloat16 and int8 keep the residual stream in float32 (sums over 30 layers drift in bfloat16).
        self.float32_residual = self.packed or self.quantized
        # A float32 residual stream is normalized by torch's fused RMSNorm (one call instead of HF's eight small ops
        # per norm, 61 norms per token), with each norm's weight kept in float32.
        self.fused_norms: dict[int, tuple[Any, float]] = {}
        if self.float32_residual or self.dtype == torch.float32:
            for norm in [model.model.norm] + [
                n for layer in self.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
            ]:
                eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
                weight = getattr(norm, "weight", None)
                if eps is not None and weight is not None and weight.dim() == 1:
                    self.fused_norms[id(norm)] = (weight.detach().float(), float(eps))
        # What one layer runs, looked up once here instead of on every step: the norms fused into the projections
        # they feed, Linear layers called by their op directly, and the rotary angles as a table by position.
        self.plan = [_LayerPlan.build(self, layer) for layer in self.layers]
        self.head = self._normed(model.model.norm, model.lm_head)
        self.rope = _rope_table(torch, model, max_len, self.dtype if not self.float32_residual else torch.float32)
        # Decode-only steps replayed from CUDA graphs on a GPU ("auto"); "eager" runs the same fixed-shape step
        # without capturing (tests); a rotary embedding that depends on the length has no fixed-shape step.
        capture = decode_graphs == "auto" and self.device.type == "cuda"
        self.graphs = (
            DecodeGraphs(self, capture=capture)
            if self.rope is not None and (capture or decode_graphs == "eager")
            else None
        )

    def top1(self, prompt: Sequence[int], count: int, forced: Sequence[int] | None = None) -> list[int]:
        """The most likely next token at each of `count` positions after `prompt`, in slot 0 of an otherwise idle
        runner; with `forced`, those tokens are fed back instead of its own picks (teacher forcing), so two
        settings' picks compare position by position. For measuring a setting (benches, tests), not for serving."""
        picked: list[int] = []
        with self.torch.inference_mode():
            self.release()
            logits = self.forward([], [(0, 0, list(prompt), True)])[-1]
            for index in range(count):
                picked.append(int(logits.argmax()))
                feed = picked[-1] if forced is None else forced[index]
                logits = self.forward([(0, feed, len(prompt) + index)], [])[0]
        self.release()
        return picked

    def _direct(self, linear: Any, float32_input: bool = True) -> tuple[Callable[[Any], Any], Any]:
        """A Linear layer as (call, inverse smoothing): int8 and float32 layers called by their op, skipping the
        module's own checks; the caller multiplies the input by the inverse smoothing (None: nothing to do). An
        int8 layer whose input is not float32 (attention output with a bfloat16 cache) keeps its module."""
        torch = self.torch
        if _INT8_LINEAR is not None and isinstance(linear, _INT8_LINEAR) and float32_input:
            if linear.outlier_index is not None:  # needs the unsmoothed input for its float32 channels
                return linear.product, None
            return linear.int8_product, linear.inverse_smooth
        if type(linear) is torch.nn.Linear and linear.weight.dtype == torch.float32:
            weight, bias = linear.weight, linear.bias
            return (lambda x: torch.nn.functional.linear(x, weight, bias)), None
        return linear, None

    def _normed(self, norm: Any, linear: Any) -> Callable[[Any], Any]:
        """linear(norm(x)) as one callable. On a float32 residual the RMSNorm runs as torch's fused LayerNorm over
        [x, -x] (whose mean is 0, so its variance is x's mean square: RMSNorm exactly, in one kernel instead of
        eight small ones), with the norm's weight and the layer's int8 smoothing folded into the LayerNorm's."""
        torch = self.torch
        call, inverse_smooth = self._direct(linear)
        fused = self.fused_norms.get(id(norm))
        if fused is None:

            def plain(x: Any) -> Any:
                x = self._norm(norm, x)
                return call(x if inverse_smooth is None else x * inverse_smooth)

            return plain
        weight, eps = fused
        if inverse_smooth is not None:
            weight = weight * inverse_smooth
        width = weight.shape[0]
        doubled = torch.cat((weight, torch.zeros_like(weight)))
        layer_norm, cat, shape = torch.nn.functional.layer_norm, torch.cat, (2 * width,)

        def fused_call(x: Any) -> Any:
            normed = layer_norm(cat((x, -x), dim=-1), shape, doubled, None, eps)[:, :width]
            return call(normed if x.shape[0] == 1 else normed.contiguous())

        return fused_call

    def _norm(self, norm: Any, hidden: Any) -> Any:
        fused = self.fused_norms.get(id(norm)) if hidden.dtype == self.torch.float32 else None
        if fused is None:
            return norm(hidden)
        weight, eps = fused
        return self.torch.nn.functional.rms_norm(hidden, weight.shape, weight, eps)

    @property
    def cache_bytes(self) -> int:
        """Bytes the KV cache holds now."""
        return sum(tensor.numel() * tensor.element_size() for tensor in self.keys + self.values if tensor is not None)

    def release(self) -> None:
        """Drop the cache (idle, or after a failed step); the next forward allocates it again."""
        if self.graphs is not None:
            self.graphs.clear()
        self.keys, self.values, self.rows, self.capacity = [], [], 0, 0

    def _fit(self, rows: int, length: int) -> None:
        """Size the cache to `rows` slots of `length` positions (rounded up to blocks): grow when they do not fit,
        shrink when they use half of it or less."""
        rows = min(self.max_batch, -(-rows // _ROW_BLOCK) * _ROW_BLOCK)
        capacity = min(self.max_len, -(-length // _CACHE_BLOCK) * _CACHE_BLOCK)
        if rows <= self.rows and capacity <= self.capacity:
            if 2 * rows * capacity > self.rows * self.capacity:
                return
        else:  # growing: keep the other dimension as it is, so that growth in turns does not thrash
            rows, capacity = max(rows, self.rows), max(capacity, self.capacity)
        keep_rows, keep = min(rows, self.rows), min(capacity, self.capacity)
        shape = (rows, self.kv_heads, capacity, self.head_dim)
        if self.graphs is not None:
            self.graphs.clear()  # they point into the tensors replaced below
        for cache in (self.keys, self.values):
            if not cache:
                cache.extend(None for _ in self.layers)
            for index, previous in enumerate(cache):
                cache[index] = None  # free this layer's old tensor before the next one is allocated
                new = self.torch.zeros(shape, dtype=self.dtype, device=self.device)
                if previous is not None and keep_rows and keep:
                    new[:keep_rows, :, :keep].copy_(previous[:keep_rows, :, :keep])
                cache[index] = new
                del previous
        self.rows, self.capacity = rows, capacity

    def forward(
        self,
        decoding: list[tuple[int, int, int]],
        prefills: list[tuple[int, int, list[int], bool]],
        *,
        layers: int | None = None,
    ) -> Any:
        """decoding: (slot, token, position) per decoding sequence, in slot order; prefills: (slot, start, tokens,
        wants_logits) per prompt slice. Returns float32 logits for every decoding row, then for each slice that
        wants them (its last token's); with `layers`, the hidden states after that many layers instead."""
        torch = self.torch
        slots = [slot for slot, _, _ in decoding]
        positions = [position for _, _, position in decoding]
        tokens = [token for _, token, _ in decoding]
        for slot, start, piece, _ in prefills:
            slots += [slot] * len(piece)
            positions += range(start, start + len(piece))
            tokens += piece
        self._fit(max(slots) + 1, max(positions) + 1)
        with torch.inference_mode():
            if self.graphs is not None and decoding and not prefills and layers is None:
                return self.graphs.run(decoding)
            return self._run(decoding, prefills, slots, positions, tokens, layers)

    def _run(
        self,
        decoding: list[Any],
        prefills: list[Any],
        slots: list[int],
        positions: list[int],
        tokens: list[int],
        layers: int | None = None,
    ):
        torch, device = self.torch, self.device
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        count = len(tokens)
        slot_index = torch.tensor(slots, device=device)
        position_index = torch.tensor(positions, device=device)
        hidden = self.model.model.embed_tokens(torch.tensor(tokens, device=device))
        if self.float32_residual:
            hidden = hidden.float()
        if self.rope is None:
            cos, sin = self.model.model.rotary_emb(hidden, position_index[None])
            cos, sin = cos[0][:, None, :], sin[0][:, None, :]
            sin = _negate_first_half(torch, sin)
        elif count == 1:
            cos, sin = self.rope[0][positions[0] : positions[0] + 1], self.rope[1][positions[0] : positions[0] + 1]
        else:
            cos, sin = self.rope[0][position_index], self.rope[1][position_index]

        decoders = len(decoding)
        # One decoding row (the common single-user case) attends over exactly its own cached prefix: no mask and no
        # scatter of the query over slots.
        single = decoders == 1
        if single:
            single_slot, _, single_position = decoding[0]
        elif decoders:
            # Decoding rows attend over slots [0, rows); rows of slots not decoding see position 0 and are dropped.
            rows = decoding[-1][0] + 1
            contiguous = rows == decoders
            lengths = torch.ones(rows, dtype=torch.long, device=device)
            lengths[slot_index[:decoders]] = position_index[:decoders] + 1
            span = int(max(p for _, _, p in decoding)) + 1
            # Added to the scores: 0 where a row may attend, -inf past its length ([rows, 1, 1, span], float32).
            decode_bias = length_bias(torch, lengths, span)
        slices = []
        offset = decoders
        for slot, start, piece, _ in prefills:
            size = len(piece)
            end = start + size
            mask = torch.arange(end, device=device)[None, :] <= torch.arange(start, end, device=device)[:, None]
            slices.append((offset, size, slot, end, mask))
            offset += size

        for index, step in enumerate(self.plan[:layers]):
            query, key, value = self.project(step, hidden, cos, sin)
            keys, values = self.keys[index], self.values[index]
            if single and count == 1:
                keys[single_slot, :, single_position] = key[0]
                values[single_slot, :, single_position] = value[0]
            else:
                keys[slot_index, :, position_index] = key.to(keys.dtype)
                values[slot_index, :, position_index] = value.to(values.dtype)
            query = query.to(keys.dtype)
            outputs = []
            if single:
                # The query heads that share a key/value head go in as that head's queries (none masked), in
                # float32, not through enable_gqa: the same result, without the slow path enable_gqa took in
                # bfloat16, whose cost grew with the cached tokens.
                out = self.sdpa(
                    query[:1].view(1, kv_heads, heads // kv_heads, head_dim).float(),
                    keys[single_slot : single_slot + 1, :, : single_position + 1].float(),
                    values[single_slot : single_slot + 1, :, : single_position + 1].float(),
                    scale=self.scale,
                )
                outputs.append(out.reshape(1, heads * head_dim).to(keys.dtype))
            elif decoders:
                outputs.append(
                    self.decode_attention(
                        query[:decoders], keys, values, None if contiguous else slot_index[:decoders], decode_bias
                    )
                )
            for start, size, slot, end, mask in slices:
                out = self.sdpa(
                    query[start : start + size].transpose(0, 1)[None],
                    keys[slot : slot + 1, :, :end],
                    values[slot : slot + 1, :, :end],
                    attn_mask=mask,
                    scale=self.scale,
                    enable_gqa=True,
                )
                outputs.append(out[0].transpose(0, 1).reshape(size, heads * head_dim))
            mixed = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
            hidden = hidden + step.attend_out(mixed)
            gate, up = step.mlp_in(hidden).chunk(2, dim=-1)
            hidden = hidden + step.mlp_out(step.act(gate) * up)

        wanted = list(range(decoders))
        wanted += [start + size - 1 for (start, size, *_), (*_, wants) in zip(slices, prefills, strict=True) if wants]
        if layers is not None:
            return hidden[wanted].float()
        return self.head(hidden if len(wanted) == count else hidden[wanted]).float()

    def decode_attention(self, query: Any, keys: Any, values: Any, slot_index: Any, bias: Any) -> Any:
        """Attention for decoding rows, one query token each ([decoders, heads, head_dim]), over the cache's first
        `rows` slots and `span` positions (bias: [rows, 1, 1, span], 0 where a row may attend, -inf past its
        length). slot_index: each decoder's slot, or None when the decoders are exactly slots 0..rows-1.
        Written out rather than SDPA: one query per row, grouped by the key/value head it shares, so each product
        is [group x head_dim] @ [head_dim x span]. SDPA with a mask took the unfused path here, 1.2x (float32) to
        5.5x (bfloat16) slower at 32 rows."""
        torch, heads, kv_heads, head_dim = self.torch, self.heads, self.kv_heads, self.head_dim
        decoders = query.shape[0]
        rows, span = bias.shape[0], bias.shape[-1]
        if slot_index is not None:
            spread = query.new_zeros(rows, heads, head_dim)
            spread[slot_index] = query
            query = spread
        grouped = query.view(rows, kv_heads, heads // kv_heads, head_dim)
        scores = torch.matmul(grouped, keys[:rows, :, :span].transpose(2, 3))
        weights = torch.softmax(scores.float().mul_(self.scale).add_(bias), dim=-1)
        out = torch.matmul(weights.to(values.dtype), values[:rows, :, :span]).view(rows, heads, head_dim)
        if slot_index is not None:
            out = out[slot_index]
        return out.reshape(decoders, heads * head_dim)

    def project(self, step: _LayerPlan, hidden: Any, cos: Any, sin: Any) -> tuple[Any, Any, Any]:
        """One layer's queries ([tokens, heads, head_dim]) and keys, rotated, and values, from the residual stream."""
        torch, heads, kv_heads, head_dim = self.torch, self.heads, self.kv_heads, self.head_dim
        count, q_size, kv_size = hidden.shape[0], self.q_size, self.kv_size
        mixed_qkv = step.attend_in(hidden)
        value = mixed_qkv[:, q_size + kv_size :].view(count, kv_heads, head_dim)
        if step.qk_norms is not None:
            query = mixed_qkv[:, :q_size].view(count, heads, head_dim)
            key = mixed_qkv[:, q_size : q_size + kv_size].view(count, kv_heads, head_dim)
            query, key = step.qk_norms[0](query), step.qk_norms[1](key)
            return _rotate(torch, query, cos, sin), _rotate(torch, key, cos, sin), value
        # Queries and keys sit side by side: one rotation for both (half the small ops per layer).
        rotated = _rotate(torch, mixed_qkv[:, : q_size + kv_size].view(count, heads + kv_heads, head_dim), cos, sin)
        return rotated[:, :heads], rotated[:, heads:], value


class _FusedSlice:
    """Stands in for one of several projections fused into one Linear (q/k/v, gate/up), so the Hugging Face
    forward still works: it computes the fused output and keeps its own columns. The engine calls the fused one.
    A plain callable held by the module, not a submodule, so weight packing sees each fused Linear once."""

    def __init__(self, owner: Any, name: str, start: int, end: int) -> None:
        self.owner, self.name, self.start, self.end = owner, name, start, end

    def __call__(self, x: Any) -> Any:
        return getattr(self.owner, self.name)(x)[..., self.start : self.end]


def _fuse_projections(torch: Any, layer: Any) -> None:
    """Replace q/k/v and gate/up by one Linear each (`qkv_proj`, `gate_up_proj`): one matrix product instead of
    three or two, which at one token per step is mostly call overhead saved. Done once per layer."""
    for module, names, fused_name in (
        (layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_proj"),
        (layer.mlp, ("gate_proj", "up_proj"), "gate_up_proj"),
    ):
        if hasattr(module, fused_name):
            continue
        parts = [getattr(module, name) for name in names]
        weights = [part.weight.detach() for part in parts]
        has_bias = any(part.bias is not None for part in parts)
        fused = torch.nn.Linear(
            weights[0].shape[1], sum(w.shape[0] for w in weights), bias=has_bias, device=weights[0].device
        ).to(weights[0].dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat(weights))
            if has_bias:
                biases = [
                    torch.zeros_like(weight[:, 0]) if part.bias is None else part.bias.detach()
                    for part, weight in zip(parts, weights, strict=True)
                ]
                fused.bias.copy_(torch.cat(biases))
        fused.requires_grad_(False)
        start = 0
        for name, weight in zip(names, weights, strict=True):
            delattr(module, name)  # frees the separate weight; the slice below answers for it
            object.__setattr__(module, name, _FusedSlice(module, fused_name, start, start + weight.shape[0]))
            start += weight.shape[0]
        setattr(module, fused_name, fused)


def _check_decode_graphs(value: str) -> None:
    if value not in DECODE_GRAPHS:
        raise ValueError(f"decode_graphs must be one of {', '.join(DECODE_GRAPHS)} (got {value!r})")


def _rotate(torch: Any, x: Any, cos: Any, signed_sin: Any) -> Any:
    """Rotary embedding, x·cos + rotate_half(x)·sin, with rotate_half(x) = [-x2, x1] written as x rolled by half
    times a sin whose first half is negated: three kernels instead of six."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def _rope_table(torch: Any, model: Any, length: int, dtype: Any) -> tuple[Any, Any] | None:
    """cos and signed sin ([length, 1, head_dim]) for every position, from the model's own rotary module, so a
    step indexes them instead of recomputing; None for a rotary embedding that depends on the sequence's length
    (dynamic scaling), which is computed per step."""
    rotary = model.model.rotary_emb
    if "dynamic" in str(getattr(rotary, "rope_type", "default")):
        return None
    probe = torch.zeros(1, dtype=dtype, device=next(model.parameters()).device)
    with torch.inference_mode():
        cos, sin = rotary(probe, torch.arange(length, device=probe.device)[None])
    return cos[0][:, None, :].contiguous(), _negate_first_half(torch, sin[0][:, None, :]).contiguous()


def _negate_first_half(torch: Any, sin: Any) -> Any:
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


@dataclass(frozen=True)
class _LayerPlan:
    """One decoder layer's callables, as _SlotModel's step runs them."""

    attend_in: Callable[[Any], Any]  # input norm + fused q/k/v projection
    attend_out: Callable[[Any], Any]  # o_proj
    mlp_in: Callable[[Any], Any]  # post-attention norm + fused gate/up projection
    mlp_out: Callable[[Any], Any]  # down_proj
    act: Callable[[Any], Any]
    qk_norms: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None  # Qwen3's per-head q and k norms

    @staticmethod
    def build(runner: _SlotModel, layer: Any) -> _LayerPlan:
        attention, mlp = layer.self_attn, layer.mlp
        return _LayerPlan(
            attend_in=runner._normed(layer.input_layernorm, attention.qkv_proj),
            attend_out=_smoothed(*runner._direct(attention.o_proj, runner.dtype == runner.torch.float32)),
            mlp_in=runner._normed(layer.post_attention_layernorm, mlp.gate_up_proj),
            mlp_out=_smoothed(*runner._direct(mlp.down_proj)),
            act=mlp.act_fn,
            qk_norms=(attention.q_norm, attention.k_norm) if runner.qk_norm else None,
        )


def _smoothed(call: Callable[[Any], Any], inverse_smooth: Any) -> Callable[[Any], Any]:
    """call, with its input multiplied by the int8 layer's inverse smoothing first when it has one."""
    if inverse_smooth is None:
        return call
    return lambda x: call(x * inverse_smooth)


_PACKED_LINEAR: Any = None


def _packed_linear(torch: Any, weight: Any) -> Any:
    """A bias-free Linear module whose bfloat16 weight oneDNN pre-packed once, instead of re-laying it out on every
    call (what makes bfloat16 fast on CPU). The class is made on first use because torch loads lazily."""
    global _PACKED_LINEAR
    if _PACKED_LINEAR is None:

        class PackedLinear(torch.nn.Module):
            def __init__(self, weight: Any) -> None:
                super().__init__()
                self.out_features, self.in_features = weight.shape
                # A plain attribute, not a parameter: an opaque oneDNN tensor that .to() and state_dict() skip.
                self.packed = torch.ops.mkldnn._reorder_linear_weight(
                    weight.detach().to(torch.bfloat16), _PACK_ROWS_HINT
                )

            def forward(self, x: Any) -> Any:
                flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
                out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, None, "none", [], "")
                return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

        _PACKED_LINEAR = PackedLinear
    return _PACKED_LINEAR(weight)


def _pack_linears(torch: Any, model: Any) -> bool:
    """On a CPU with native bfloat16, swap the model's bias-free bfloat16 Linear layers (lm_head too) for packed
    ones, freeing each original weight (a tied lm_head gets its own packed copy); False when nothing was packed."""
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.bfloat16:
        return False
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        probe = _packed_linear(torch, torch.ones(8, 8, dtype=torch.bfloat16))
        expected = torch.full((2, 8), 8.0, dtype=torch.bfloat16)
        if not torch.equal(probe(torch.ones(2, 8, dtype=torch.bfloat16)), expected):
            return False
    except (RuntimeError, AttributeError):  # an older torch, or one built without these oneDNN ops
        _log.info("oneDNN weight packing is unavailable; bfloat16 Linear layers run unpacked")
        return False
    return _replace_linears(torch, model, lambda torch, linear: _packed_linear(torch, linear.weight))


def _bias_free_linears(torch: Any, model: Any) -> list[tuple[Any, str, Any]]:
    """(parent, attribute name, layer) for every bias-free Linear layer of the model, lm_head too."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear) and child.bias is None
    ]


def _replace_linears(torch: Any, model: Any, make: Callable[[Any, Any], Any]) -> bool:
    """Swap every bias-free Linear layer (lm_head too) for `make(torch, linear)`; False when there was none."""
    targets = _bias_free_linears(torch, model)
    for parent, name, child in targets:
        setattr(parent, name, make(torch, child))
    return bool(targets)


_INT8_LINEAR: Any = None
# SmoothQuant's migration strength: how much of an input channel's range moves from the activations to the weights.
_SMOOTH_ALPHA = 0.5
# down_proj input channels kept in float32 under int8: on the embedded model, teacher-forced top-1 agreement with
# float32 went from 92.5% to 95.0% with 4 (a first probe: 1 93.8%, 16 95.3%; all of down_proj in float32 96.9% at
# 1.5x the step).
_DOWN_PROJ_OUTLIERS = 4
# A few short chats in the register Chorus writes in, run once at load to measure each layer's input ranges.
_CALIBRATION_CHATS = (
    (ChatMessage("user", "Write three slogans for a neighbourhood coffee shop that roasts its own beans."),),
    (
        ChatMessage("user", "Give me a tweet announcing our spring festival: music, food trucks and games for kids!"),
        ChatMessage(
            "assistant", "Spring is here! Join us Saturday for live music, food trucks and games for the whole family."
        ),
        ChatMessage("user", "Make it more playful and add one emoji."),
    ),
    (
        ChatMessage(
            "user", "Brainstorm five names for a community garden, then a two-line poem about the first harvest."
        ),
    ),
)


def _int8_linear(
    torch: Any, weight: Any, input_range: Any = None, reduce_range: bool = False, outliers: int = 0
) -> Any:
    """A bias-free Linear module with int8 weights (one scale per output channel), run by the quantized engine's
    dynamic int8 matrix product: each call quantizes its input per tensor and multiplies in int8. Half the weight
    bytes of bfloat16 per token.

    input_range (each input channel's largest |x| on calibration text) turns on SmoothQuant: a few input channels
    of an LLM carry values far above the rest, which per-tensor activation quantization cannot represent, so each
    channel is divided by s = range^a / max|w|^(1-a) on the way in and its weights multiplied by s. reduce_range
    quantizes activations to 7 bits: needed on x86 without VNNI, whose u8 x s8 pair sums saturate int16.

    outliers (with input_range): that many input channels with the largest ranges stay out of the int8 product and
    are multiplied in float32 (LLM.int8()'s decomposition). down_proj's input has a few channels hundreds of times
    larger than the rest, which set the per-tensor activation scale for all of them."""
    global _INT8_LINEAR
    if _INT8_LINEAR is None:

        class Int8Linear(torch.nn.Module):
            def __init__(self, weight: Any, input_range: Any, reduce_range: bool, outliers: int) -> None:
                super().__init__()
                self.out_features, self.in_features = weight.shape
                self.reduce_range = reduce_range
                weight = weight.detach().float().clone()
                self.inverse_smooth = None
                self.outlier_index: Any = None
                self.outlier_weight: Any = None
                if input_range is not None:
                    input_range = input_range.float().clone()
                    if outliers:
                        self.outlier_index = input_range.topk(min(outliers, self.in_features)).indices.sort().values
                        self.outlier_weight = weight[:, self.outlier_index].clone()
                        weight[:, self.outlier_index] = 0
                        input_range[self.outlier_index] = 0
                    weight_range = weight.abs().amax(dim=0).clamp(min=1e-5)
                    smooth = input_range.clamp(min=1e-5) ** _SMOOTH_ALPHA / weight_range ** (1 - _SMOOTH_ALPHA)
                    smooth = smooth.clamp(min=1e-5)
                    weight = weight * smooth
                    self.inverse_smooth = 1 / smooth
                    if self.outlier_index is not None:  # outlier channels reach the int8 product as zeros
                        self.inverse_smooth[self.outlier_index] = 0
                # Plain attributes, not parameters: opaque packed weights that .to() and state_dict() skip.
                self.packed: Any = None
                self.fbgemm: tuple[Any, ...] | None = None
                if not reduce_range and _fbgemm_product(torch) is not None:
                    self.fbgemm = _fbgemm_packed(torch, weight)
                else:
                    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
                    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
                    with warnings.catch_warnings():  # deprecated in torch; _quantize_linears falls back when gone
                        warnings.simplefilter("ignore", UserWarning)
                        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
                    self.packed = torch.ops.quantized.linear_prepack(quantized, None)
                # The int8 product alone, on an already smoothed float32 [tokens, features] input.
                self.int8_product = self._int8_product()

            def _int8_product(self) -> Callable[[Any], Any]:
                if self.fbgemm is not None:
                    op, (*arguments, row_scales) = _fbgemm_product(torch), self.fbgemm
                    return lambda x: op(x, *arguments).mul_(row_scales)
                dynamic, packed, reduce_range = torch.ops.quantized.linear_dynamic, self.packed, self.reduce_range
                return lambda x: dynamic(x, packed, reduce_range)

            def product(self, flat: Any) -> Any:
                """The layer on a float32 [tokens, features] input (what the engine calls directly)."""
                out = self.int8_product(flat if self.inverse_smooth is None else flat * self.inverse_smooth)
                if self.outlier_index is not None:
                    out = torch.addmm(out, flat.index_select(1, self.outlier_index), self.outlier_weight.t())
                return out

            def forward(self, x: Any) -> Any:
                flat = x if x.dim() == 2 else x.reshape(-1, self.in_features)
                out = self.product(flat if flat.dtype == torch.float32 else flat.float())
                if x.dim() != 2:
                    out = out.reshape(*x.shape[:-1], self.out_features)
                return out if x.dtype == torch.float32 else out.to(x.dtype)

        _INT8_LINEAR = Int8Linear
    return _INT8_LINEAR(weight, input_range, reduce_range, outliers)


@functools.cache
def _fbgemm_product(torch: Any) -> Any:
    """torch's fbgemm int8 x float32 matrix product on a packed matrix held in a plain tensor, or None where this
    torch lacks it. The same fbgemm kernels as the quantized engine's linear_dynamic with less work per call: most
    of the int8 batch-1 step's 15.38 -> 12.73 ms this round (bench/engine_ab.py, docs/benchmarks.md). It quantizes
    activations to full 8 bits, so it needs VNNI (no reduce_range)."""
    op = getattr(torch, "fbgemm_linear_int8_weight_fp32_activation", None)
    if op is None or not all(
        hasattr(torch, name) for name in ("fbgemm_linear_quantize_weight", "fbgemm_pack_quantized_matrix")
    ):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = _fbgemm_packed(torch, torch.eye(8))
            product = op(torch.ones(2, 8), *probe[:-1]).mul_(probe[-1])
    except RuntimeError:  # a torch built without fbgemm
        return None
    return op if torch.allclose(product, torch.ones(2, 8), rtol=0.05) else None


def _fbgemm_packed(torch: Any, weight: Any) -> tuple[Any, ...]:
    """(weight stand-in, packed matrix, column offsets, scale, zero point, zero bias, row scales): the arguments of
    _fbgemm_product for a float32 [out, in] weight, then the per-row scales its output is multiplied by. fbgemm
    quantizes a weight per tensor; each row is divided by its largest |w| first, so the int8 grid is per row, as
    with linear_dynamic's per-channel weights. The op reads the weight argument only for its shape: a zero-stride
    stand-in keeps one copy of the int8 weight (the packed one) in memory. The weight is divided in place (an
    lm_head's float32 copy is 113 MB), so it is the caller's own copy."""
    rows = weight.abs().amax(dim=1).clamp(min=1e-12)
    with warnings.catch_warnings():  # deprecated in torch, kept by it; _fbgemm_product checks it is there
        warnings.simplefilter("ignore")
        quantized, column_offsets, scale, zero_point = torch.fbgemm_linear_quantize_weight(weight.div_(rows[:, None]))
        packed = torch.fbgemm_pack_quantized_matrix(quantized)
    del quantized
    stand_in = torch.zeros((), dtype=torch.int8).expand(*weight.shape)
    bias = torch.zeros(weight.shape[0])
    return stand_in, packed, column_offsets, scale, zero_point, bias, rows.float().contiguous()


def _input_ranges(torch: Any, model: Any, calibration: Sequence[Sequence[int]]) -> dict[Any, Any]:
    """Each bias-free Linear layer's largest |input| per channel over the calibration token sequences."""
    ranges: dict[Any, Any] = {}

    def record(module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
        seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0).float()
        ranges[module] = seen if module not in ranges else torch.maximum(ranges[module], seen)

    hooks = [linear.register_forward_hook(record) for _, _, linear in _bias_free_linears(torch, model)]
    try:
        with torch.inference_mode():
            for ids in calibration:
                model(input_ids=torch.tensor([list(ids)], device=next(model.parameters()).device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _quantize_linears(torch: Any, model: Any, calibration: Sequence[Sequence[int]] = ()) -> bool:
    """On a CPU whose torch has the x86 quantized engine, swap the model's bias-free Linear layers (lm_head too) for
    int8 ones, freeing each original weight (a tied lm_head gets its own int8 copy); False when it cannot. With
    calibration token sequences, each layer is smoothed by its measured input ranges."""
    if next(model.parameters()).device.type != "cpu":
        return False
    try:
        if "x86" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "x86"
        elif "fbgemm" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "fbgemm"
        else:
            return False
        vnni = getattr(torch.cpu, "_is_vnni_supported", None)
        reduce_range = not (callable(vnni) and vnni())
        probe = _int8_linear(torch, torch.ones(8, 8), reduce_range=reduce_range)
        if not torch.allclose(probe(torch.ones(2, 8)), torch.full((2, 8), 8.0), rtol=0.05):
            return False
    except (RuntimeError, AttributeError):  # a torch built without the quantized CPU engine
        _log.info("int8 Linear layers are unavailable; the weights stay as they are")
        return False
    ranges = _input_ranges(torch, model, calibration) if calibration else {}
    targets = _bias_free_linears(torch, model)
    for parent, name, linear in targets:
        outliers = _DOWN_PROJ_OUTLIERS if name == "down_proj" else 0
        setattr(parent, name, _int8_linear(torch, linear.weight, ranges.get(linear), reduce_range, outliers))
    return bool(targets)
