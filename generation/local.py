"""The in-process engine: one worker thread running a plain KV-cached decode loop, one request at a time, FIFO.

`engine.kind = "simple"`: the reference the batching engine (engine.py, the default) is checked against, and the
fallback where batching is not wanted. torch and transformers load lazily, in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.models import ModelSpec, import_transformers
from generation.types import (
    Chunk,
    FinishReason,
    GenerationError,
    GenerationRequest,
    GeneratorBusy,
    Health,
    ModelUnavailable,
)

_log = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"
_JOIN_TIMEOUT_S = 10.0
# Candidates kept for top-p sampling; rows whose nucleus reaches past them fall back to a full sort.
_TOP_P_CANDIDATES = 512
# The Retry-After of a full queue before any request has finished and shown how long one takes.
_BUSY_RETRY_UNKNOWN_S = 5
_SERVICE_EMA_WEIGHT = 0.2
# A long prompt is prefilled in pieces of this many tokens, so an abort or the time budget stops it between pieces.
_PREFILL_PIECE = 256


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas.

    Each step decodes only a short window of recent ids (vLLM's prefix/read offsets): the window's text with and
    without the new token, whose difference is the new text. Decoding all ids each step cost time that grew with
    the answer (8% of a long answer's decode thread in `chorus serve`). Starting both decodes at the same id makes
    a tokenizer's special handling of a first piece (a dropped leading space) cancel out. Partial UTF-8 characters
    (a trailing U+FFFD) are held back, and so is any tail that could be the start of a stop string; a completed
    stop string and what follows it are never handed out.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        # ids[:_read] are decoded into _settled; ids[_prefix:_read] is the window's context for the next decode.
        self._prefix = 0
        self._read = 0
        self._settled = ""
        self._text = ""
        self._emitted = 0
        self.stopped = False

    @property
    def ids(self) -> list[int]:
        """The token ids added so far."""
        return list(self._ids)

    @property
    def text(self) -> str:
        """Everything decoded so far that can be shown, cut at a stop string once one appeared."""
        return self._text

    def add(self, token_id: int) -> str:
        """Append one token and return the text that became safe to show (often empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        context = self._decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        window = self._decode(self._ids[self._prefix :])
        new = window[len(context) :]
        if new.endswith(_REPLACEMENT):
            # A character still being spelled out byte by byte: shown once it is complete.
            text = self._settled + new.rstrip(_REPLACEMENT)
        else:
            self._settled += new
            self._prefix, self._read = self._read, len(self._ids)
            text = self._settled
        hit = self._first_stop(text)
        if hit is not None:
            self.stopped = True
            text = text[:hit]
            self._text = text
            return self._advance(len(text))
        self._text = text
        return self._advance(len(text) - self._held_back(text))

    def flush(self) -> str:
        """The held-back tail, shown when generation ends without completing a stop string."""
        return self._advance(len(self._text))

    def _advance(self, end: int) -> str:
        if end <= self._emitted:
            return ""
        delta = self._text[self._emitted : end]
        self._emitted = end
        return delta

    def _first_stop(self, text: str) -> int | None:
        # Held-back text guarantees that a stop string never starts inside what was already handed out.
        hits = [index for stop in self._stop if (index := text.find(stop, self._emitted)) >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        longest = max((len(stop) - 1 for stop in self._stop), default=0)
        for size in range(min(longest, len(text) - self._emitted), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stop):
                return size
        return 0


@dataclass(eq=False)
class _Job:
    request: GenerationRequest | None  # None: a warmup that only loads the model
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Chunk | GenerationError | None]
    abort: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    cancelled: bool = False
    tokens: int = 0
    # When the request's time budget runs out, counted from its arrival: queueing, tokenizing and prefill count.
    deadline: float = math.inf


class LocalGenerator:
    """Generator over a local Hugging Face model directory, one request at a time in a worker thread."""

    def __init__(
        self, spec: ModelSpec, *, device: str = "cpu", dtype: str = "float32", max_queue: int = 64, threads: int = 0
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be 0 (all cores) or more")
        self.spec = spec
        self._threads = threads
        self._cpu_threads = 0
        self._device_setting = device
        self._dtype_name = dtype
        self._max_queue = max_queue
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._torch: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = ""
        self._eos_ids: frozenset[int] = frozenset()
        self._context_limit: int | None = None
        self._load_error: ModelUnavailable | None = None
        # Seconds one request holds a slot, a moving average; what a busy answer's Retry-After is based on.
        self._service_s: float | None = None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the worker, not counting the one it is running."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.started)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Queue the request and yield its chunks; leaving early aborts it so the worker moves on."""
        job = self._admit(request, asyncio.get_running_loop())
        finished = False
        try:
            while not finished:
                item = await job.events.get()
                if isinstance(item, GenerationError):  # ModelUnavailable, or a request the engine refused
                    finished = True
                    raise type(item)(str(item))
                if not isinstance(item, Chunk):
                    finished = True
                    raise GenerationError("The generator stopped before the request finished.")
                finished = item.finish_reason is not None
                yield item
        finally:
            if not finished:
                self._abort_job(job)

    async def abort(self, request_id: str) -> None:
        """Stop a queued request at once, or a running one within one decode step."""
        with self._lock:
            job = self._jobs.get(request_id)
        if job is not None and self._abort_job(job):
            self._post(job, Chunk(request_id=request_id, finish_reason="abort"))

    async def warmup(self) -> None:
        """Load the model now instead of on the first request; raises ModelUnavailable."""
        job = _Job(request=None, loop=asyncio.get_running_loop(), events=asyncio.Queue())
        with self._lock:
            if self._closed:
                raise GenerationError("The generator is closed.")
            self._start_worker()
        self._inbox.put(job)
        item = await job.events.get()
        if isinstance(item, ModelUnavailable):
            raise ModelUnavailable(str(item))

    async def health(self) -> Health:
        """Whether requests can be served, without loading the model."""
        name = self.spec.name
        if self._closed:
            return Health(ok=False, detail="closed", model=name)
        if self._load_error is not None:
            return Health(ok=False, detail=str(self._load_error), model=name)
        if self._thread is not None and not self._thread.is_alive():
            return Health(ok=False, detail="the generation worker thread has stopped", model=name)
        waiting = self.queue_depth
        if self._model is None:
            if not (self.spec.path / "config.json").is_file():
                return Health(ok=False, detail=f"no model at {self.spec.path}", model=name)
            return Health(ok=True, detail=f"not loaded yet (loads on the first request); {waiting} waiting", model=name)
        return Health(ok=True, detail=f"loaded on {self._device}{self._threads_note()}; {waiting} waiting", model=name)

    async def close(self) -> None:
        """Abort everything, stop the worker thread and drop the model."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            thread = self._thread
        for job in jobs:
            if self._abort_job(job) and job.request is not None:
                self._post(job, Chunk(request_id=job.request.request_id, finish_reason="abort"))
        if thread is None:
            return
        self._inbox.put(None)
        await asyncio.to_thread(thread.join, _JOIN_TIMEOUT_S)
        if thread.is_alive():
            _log.warning("the generation worker did not stop within %.0f s", _JOIN_TIMEOUT_S)
            return
        self._model = self._tokenizer = None

    # -- the asyncio side ------------------------------------------------------------------------------------------

    def _admit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> _Job:
        job = self._new_job(request, loop)
        with self._lock:
            if self._closed:
                raise GenerationError("The generator is closed.")
            if request.request_id in self._jobs:
                raise GenerationError(f"Request {request.request_id} is already in progress.")
            if len(self._jobs) >= self._slots_total + self._max_queue:
                waiting = len(self._jobs) - self._slots_total
                retry_after = self._retry_after_s()
                raise GeneratorBusy(
                    f"Chorus is busy ({waiting} requests waiting). Try again in {retry_after} s.", retry_after
                )
            self._jobs[request.request_id] = job
            self._start_worker()
        self._inbox.put(job)
        return job

    def _abort_job(self, job: _Job) -> bool:
        """Flag the job; returns True when it was still queued, so nobody else will end its stream."""
        job.abort.set()
        with self._lock:
            if job.started or job.cancelled:
                return False
            job.cancelled = True
            self._unqueue(job)
            if job.request is not None and self._jobs.get(job.request.request_id) is job:
                del self._jobs[job.request.request_id]
            return True

    # Requests that run at once: one here; the batching engine has max_batch slots.
    _slots_total = 1

    def _retry_after_s(self) -> int:
        """Whole seconds until a place in the queue is likely to free up: one request's service time spread over
        the slots that run at once (at least 1 s)."""
        if self._service_s is None:
            return _BUSY_RETRY_UNKNOWN_S
        return max(1, math.ceil(self._service_s / self._slots_total))

    def _note_service(self, seconds: float) -> None:
        previous = self._service_s
        self._service_s = seconds if previous is None else previous + _SERVICE_EMA_WEIGHT * (seconds - previous)

    def _new_job(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> _Job:
        validate_request(request)
        return _Job(request=request, loop=loop, events=asyncio.Queue(), deadline=_deadline(request))

    def _unqueue(self, job: _Job) -> None:
        """Take a not-yet-started job out of the engine's own waiting line (the worker's inbox needs nothing)."""

    def _start_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="chorus-generator", daemon=True)
            self._thread.start()

    # -- the worker thread -----------------------------------------------------------------------------------------

    def _post(self, job: _Job, item: Chunk | GenerationError | None) -> None:
        try:
            job.loop.call_soon_threadsafe(job.events.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is closed; nobody is listening any more
            job.abort.set()

    def _work(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            with self._lock:
                if job.cancelled:
                    continue
                job.started = True
            started = time.monotonic()
            outcome = self._serve(job)
            if isinstance(outcome, Chunk) and outcome.finish_reason != "error":
                self._note_service(time.monotonic() - started)
            if job.request is not None:
                with self._lock:
                    if self._jobs.get(job.request.request_id) is job:
                        del self._jobs[job.request.request_id]
            self._post(job, outcome)

    def _serve(self, job: _Job) -> Chunk | ModelUnavailable | None:
        try:
            self._ensure_loaded()
        except ModelUnavailable as exc:
            return exc
        except Exception as exc:  # e.g. a broken torch install; keep the worker alive and say what happened
            _log.exception("loading %s failed", self.spec.path)
            return ModelUnavailable(f"Could not load the model from {self.spec.path} ({_short(exc)}).")
        if job.request is None:
            return None
        try:
            return self._generate(job, job.request)
        except Exception as exc:  # a torch or CUDA error ends this stream, not the worker
            _log.exception("generation %s failed", job.request.request_id)
            return Chunk(request_id=job.request.request_id, finish_reason="error", error=_short(exc), tokens=job.tokens)

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        if self._load_error is not None:
            raise self._load_error
        try:
            self._load()
        except ModelUnavailable as exc:
            self._load_error = exc
            raise

    def _threads_note(self) -> str:
        return f", {self._cpu_threads} thread{'s' if self._cpu_threads != 1 else ''}" if self._device == "cpu" else ""

    def _load(self) -> None:
        transformers = import_transformers()
        import torch

        if self._threads:  # set on this worker thread, which runs the model; 0 leaves torch's default (one per core)
            torch.set_num_threads(self._threads)
        self._cpu_threads = torch.get_num_threads()
        device = resolve_device(torch, self._device_setting)
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelUnavailable("model.device = 'cuda' but torch sees no CUDA device; set model.device = 'cpu'.")
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if self._dtype_name not in dtypes:
            raise ModelUnavailable(f"model.dtype = {self._dtype_name!r} is not one of {', '.join(dtypes)}.")
        started = time.monotonic()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.spec.path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.spec.path, local_files_only=True, dtype=dtypes[self._dtype_name]
            )
            model.to(device)
            model.eval()
        except Exception as exc:
            raise ModelUnavailable(
                f"Could not load the model from {self.spec.path} ({_short(exc)}). "
                "If Chorus converted it, delete that directory and start again to convert it anew."
            ) from None
        eos: set[int] = set()
        for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(token) for token in source)
        self._torch, self._tokenizer, self._device, self._eos_ids = torch, tokenizer, device, frozenset(eos)
        self._context_limit = getattr(model.config, "max_position_embeddings", None)
        self._model = model
        _log.info(
            "loaded %s on %s (%s) in %.1f s", self.spec.name, device, self._dtype_name, time.monotonic() - started
        )

    def _generate(self, job: _Job, request: GenerationRequest) -> Chunk:
        torch = self._torch
        rid = request.request_id
        detokenizer = IncrementalDetokenizer(self._decode, request.stop)

        prompt_tokens: int | None = None

        def final(reason: FinishReason) -> Chunk:
            text = detokenizer.flush()
            return Chunk(rid, text, reason, tokens=job.tokens, prompt_tokens=prompt_tokens)

        def interrupted() -> FinishReason | None:
            if job.abort.is_set():
                return "abort"
            return "time" if time.monotonic() >= job.deadline else None

        if reason := interrupted():
            return final(reason)
        prompt = self._encode(request)
        prompt_tokens = int(prompt.shape[1])
        budget = request.max_new_tokens
        if self._context_limit is not None:
            room = self._context_limit - prompt_tokens
            if room <= 0 < budget:
                return Chunk(
                    request_id=rid,
                    finish_reason="error",
                    error=f"The prompt is too long ({prompt_tokens} tokens; the model takes {self._context_limit}).",
                    prompt_tokens=prompt_tokens,
                )
            budget = min(budget, room)
        generator = None
        if request.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(request.seed)  # sample_rows draws on the CPU

        with torch.inference_mode():
            if budget <= 0:
                return final("length")
            past = None
            for start in range(0, prompt.shape[1], _PREFILL_PIECE):
                if reason := interrupted():
                    return final(reason)
                logits, past = self._forward(prompt[:, start : start + _PREFILL_PIECE], past)
            while True:
                if reason := interrupted():
                    return final(reason)
                history = detokenizer.ids if request.repetition_penalty != 1.0 else ()
                token = self._sample(logits, request, generator, history)
                if token in self._eos_ids:
                    return final("stop")
                job.tokens += 1
                delta = detokenizer.add(token)
                if delta:
                    self._post(job, Chunk(request_id=rid, text=delta, tokens=job.tokens))
                if detokenizer.stopped:
                    return final("stop")
                if job.tokens >= budget:
                    return final("length")
                logits, past = self._forward(torch.tensor([[token]], device=self._device), past)

    def _encode(self, request: GenerationRequest) -> Any:
        messages = [{"role": message.role, "content": message.content} for message in request.messages]
        if getattr(self._tokenizer, "chat_template", None):
            encoded = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:  # a base model without a chat template: a plain transcript
            transcript = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            encoded = self._tokenizer(transcript, return_tensors="pt")
        return encoded["input_ids"].to(self._device)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _forward(self, input_ids: Any, past: Any) -> tuple[Any, Any]:
        """One model call: the prompt (prefill) or one new token against the KV cache; returns last logits."""
        out = self._model(input_ids=input_ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), out.past_key_values

    def _sample(self, logits: Any, request: GenerationRequest, generator: Any, history: Sequence[int] = ()) -> int:
        return sample_rows(self._torch, logits[None], [request], [generator], [history])[0]


def resolve_device(torch: Any, setting: str) -> str:
    """model.device as the model will run: "auto" is CUDA when torch sees a device, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def sample_rows(
    torch: Any,
    logits: Any,
    requests: Sequence[GenerationRequest],
    generators: Sequence[Any],
    histories: Sequence[Sequence[int]] | None = None,
) -> list[int]:
    """One token per row: greedy at temperature 0, else top-p sampling with each request's own generator; a row whose
    request sets repetition_penalty first has the logits of the tokens in its history (what it generated) penalised.

    Keeps the smallest most-likely prefix whose mass reaches top_p, searched among the top candidates instead of a
    full sort of the vocabulary (slow on CPU); rows whose nucleus is wider fall back to the sort. Both generators
    use it.
    """
    if histories is not None:
        logits = _penalise_repeats(torch, logits, requests, histories)
    chosen = logits.argmax(dim=-1).tolist()
    rows = [index for index, request in enumerate(requests) if request.temperature > 0]
    if not rows:
        return chosen
    temperatures = torch.tensor([requests[i].temperature for i in rows], dtype=logits.dtype, device=logits.device)
    top_p = torch.tensor([requests[i].top_p for i in rows], dtype=logits.dtype, device=logits.device)
    probs = torch.softmax(logits[rows] / temperatures[:, None], dim=-1)
    candidates = min(_TOP_P_CANDIDATES, probs.shape[-1])
    top, order = probs.topk(candidates, dim=-1)
    before = top.cumsum(dim=-1) - top
    weights = top * (before < top_p[:, None])
    # Rows whose nucleus may reach past the candidates (and top_p = 1 rows) draw from the whole vocabulary.
    whole = ((before[:, -1] + top[:, -1]) < top_p).tolist()
    draws = [float(torch.rand((), generator=generators[i])) for i in rows]
    for position, row in enumerate(rows):
        if whole[position]:
            chosen[row] = _draw_whole(torch, probs[position], requests[row].top_p, draws[position])
            continue
        cdf = weights[position].cumsum(dim=-1)
        index = int(torch.searchsorted(cdf, cdf[-1] * draws[position], right=True).clamp(max=candidates - 1))
        chosen[row] = int(order[position, index])
    return chosen


def _penalise_repeats(
    torch: Any, logits: Any, requests: Sequence[GenerationRequest], histories: Sequence[Sequence[int]]
) -> Any:
    """The logits with each penalised row's already-generated tokens made less likely (a copy; rows without a
    penalty or a history are untouched)."""
    rows = [i for i, request in enumerate(requests) if request.repetition_penalty != 1.0 and histories[i]]
    if not rows:
        return logits
    logits = logits.clone()
    for row in rows:
        penalty = requests[row].repetition_penalty
        seen = torch.tensor(sorted(set(histories[row])), dtype=torch.long, device=logits.device)
        scores = logits[row, seen]
        logits[row, seen] = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits


def _draw_whole(torch: Any, probs: Any, top_p: float, draw: float) -> int:
    if top_p < 1:
        probs, order = torch.sort(probs, descending=True)
        probs = probs * ((probs.cumsum(dim=-1) - probs) < top_p)
    else:
        order = None
    cdf = probs.cumsum(dim=-1)
    index = int(torch.searchsorted(cdf, cdf[-1] * draw, right=True).clamp(max=cdf.shape[-1] - 1))
    return index if order is None else int(order[index])


def _deadline(request: GenerationRequest) -> float:
    """When a request arriving now runs out of time (validate_request refuses a budget that is not a number)."""
    return time.monotonic() + request.time_budget_s


def validate_request(request: GenerationRequest) -> None:
    """Reject sampling parameters and budgets that can never work, before the request takes a place in the queue."""
    if request.max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens must be at least 1 (got {request.max_new_tokens}).")
    if not (request.temperature >= 0 and math.isfinite(request.temperature)):  # also catches NaN
        raise GenerationError(f"temperature must be a finite number, 0 or more (got {request.temperature}).")
    if not 0 < request.top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1] (got {request.top_p}).")
    if request.seed is not None and not -(2**63) <= request.seed < 2**64:
        raise GenerationError(f"seed must fit in 64 bits (got {request.seed}).")
    if not (request.repetition_penalty > 0 and math.isfinite(request.repetition_penalty)):
        penalty = request.repetition_penalty
        raise GenerationError(f"repetition_penalty must be a positive, finite number (got {penalty}).")
    if not (request.time_budget_s > 0 and math.isfinite(request.time_budget_s)):
        raise GenerationError(f"time_budget_s must be a positive, finite number (got {request.time_budget_s}).")


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return message if len(message) <= 200 else message[:199] + "…"
