"""``hf-sentinel serve``: an OpenAI-compatible chat-completions server for any target under any defenses.

Deploy a guarded model as a service, or put a local model behind an endpoint that a sentinel elsewhere guards
(:class:`hf_sentinel.remote.RemoteChatTarget` speaks to it). What an OpenAI client can rely on:

- **Batching.** One worker thread runs every generation: the requests that arrive while it is busy (or within
  ``batch_wait_ms`` of the first) go through :func:`hf_sentinel.generation.generate` together, up to
  ``max_batch_size``, each row stopping at its own ``max_tokens``. Greedy requests batch together, sampled ones
  with the same temperature and top_p; a sampled request with a ``seed`` runs alone, so its answer repeats.
- **Streaming** (``stream: true``): server-sent events in the OpenAI chunk format, ending with ``data: [DONE]``. The
  first chunk comes once the defenses have rewritten the request (a sentinel's suffix is decided before the first
  token, and reported there). When a defense replaces an answer that was partly streamed (the red flag fired),
  the last chunk carries the replacement as its content, ``finish_reason: "content_filter"``, and
  ``hf_sentinel.retracted: true`` with the whole final answer in ``hf_sentinel.content``: a client that shows
  streamed text should replace it.
- **Stop strings** (``stop``: a string or a list of up to 4, as OpenAI): the answer ends before the first of them
  to appear (which is not part of it), with ``finish_reason: "stop"``, and its row stops generating there, while
  the rest of its batch goes on. A stream holds back any tail that may still grow into a stop string, and never
  sends a stop string or what follows it. The answer of a defense that replaced it (a refusal) is left whole.
- **Honest endings**: ``finish_reason`` is ``"content_filter"`` when a defense replaced or cut the answer,
  ``"length"`` when ``max_tokens`` ran out, else ``"stop"`` (the model ended, or a stop string did); ``usage``
  counts prompt tokens (as the target read them, after the defenses' rewrites) and answer tokens; ``hf_sentinel``
  holds the defenses' report (sentinel suffix, red-flag step and probability). ``/v1/models`` lists the served
  model with its defenses.
- **Safe by default**: loopback bind unless told; optional API keys (``Authorization: Bearer KEY``, else 401);
  every request is checked before it reaches the model (roles, empty messages, message count, prompt length in
  tokens, sampling parameters, stop strings), a bad one gets HTTP 400 with OpenAI's error body::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}

  An error inside generation fails only its own request (HTTP 500, ``type: server_error``; a batch that fails is
  retried one request at a time) and the server keeps serving; on shutdown, requests in flight are finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .defenses import Defense, describe
from .generation import GenerationSettings, generate, render, stop_token_ids
from .remote import RemoteChatTarget

MAX_TOKENS_LIMIT = 2048
DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_PROMPT_TOKENS = 4096
DEFAULT_MAX_MESSAGES = 64
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 10.0
#: OpenAI's limit on a request's stop strings.
MAX_STOP_STRINGS = 4
ROLES = ("system", "user", "assistant")
# torch.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1
#: Where `hf-sentinel serve` reads its API key when --api-key is not given.
API_KEY_ENV = "HF_SENTINEL_API_KEY"

logger = logging.getLogger(__name__)


class ChatMessage(BaseModel):
    role: str
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str = "default"
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, description=f"new tokens to generate (default {DEFAULT_MAX_TOKENS})")
    max_completion_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Any JSON: _stop_strings checks it, so that a wrong type gets a message that says what to send.
    stop: Any = Field(default=None, description=f"a string or up to {MAX_STOP_STRINGS}: the answer ends before the "
                                                f"first that appears")


class APIError(Exception):
    """A request answered with an OpenAI error body: 400 for what must not reach the model (naming the parameter
    at fault), 401 for a missing or wrong API key."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def check_limits(max_prompt_tokens: int, max_messages: int, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> None:
    """Raise ``ValueError`` on server settings that would refuse every request or never batch."""
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens (--max-prompt-tokens) must be at least 1, got {max_prompt_tokens}.")
    if max_messages < 1:
        raise ValueError(f"max_messages (--max-messages) must be at least 1, got {max_messages}.")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size (--max-batch-size) must be at least 1 (1: one request at a time), got "
                         f"{max_batch_size}.")
    if not (math.isfinite(batch_wait_ms) and batch_wait_ms >= 0):
        raise ValueError(f"batch_wait_ms (--batch-wait-ms) must be a number of milliseconds >= 0, got "
                         f"{batch_wait_ms}.")


class StopSequences:
    """A request's ``stop`` strings: its answer ends where the first of them begins.

    >>> stops = StopSequences(["\\n\\n", "User:"])
    >>> stops.find("Hi.\\n\\nUser: more"), stops.find("Hi. User:\\n\\n"), stops.find("Hi.") is None
    (3, 4, True)

    A stream shows only the text that nothing generated later can turn into a stop string: a tail that is the
    beginning of one waits, and nothing from a stop string on is ever shown.

    >>> stops.safe_prefix_length("Hi. Us"), stops.safe_prefix_length("Hi.\\n"), stops.safe_prefix_length("Hi. Used")
    (4, 3, 8)
    >>> stops.safe_prefix_length("Hi. User: more")
    4
    """

    def __init__(self, strings: list[str]):
        self.strings = list(strings)
        self._longest = max(map(len, self.strings))

    def find(self, text: str, since: int = 0) -> int | None:
        """Where the earliest stop string in ``text`` begins, or ``None``. ``since``: a length of ``text`` known to
        hold no stop string (text that grows token by token is searched only where a new one could be)."""
        start = max(since - self._longest + 1, 0)
        return min((at for string in self.strings if (at := text.find(string, start)) >= 0), default=None)

    def safe_prefix_length(self, text: str, since: int = 0) -> int:
        """How much of ``text`` can be shown: what comes before its first stop string, else all but the longest tail
        that is the beginning of a stop string. ``since`` as for :meth:`find`."""
        cut = self.find(text, since)
        if cut is not None:
            return cut
        for start in range(max(len(text) - self._longest + 1, 0), len(text)):
            if any(string.startswith(text[start:]) for string in self.strings):
                return start
        return len(text)


# ------------------------------------------------------------------------------------------------------- batching


@dataclass(eq=False)
class _Job:
    """One request on its way through the worker. ``emit`` hands the worker's events to the request's handler
    (thread-safe): ``("rewritten", conversation, extras)``, ``("text", new_text)`` while a stream streams (decoded
    here, once, as the tokens come), then ``("done", answer)`` or ``("error", exception)``."""

    conversation: list[dict]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    emit: Callable[[tuple], None]
    stop_strings: StopSequences | None = None
    stream: bool = False  # only a stream is sent its text as it grows
    cancelled: bool = False  # the client went away: its row stops at the next step
    generated: int = 0  # the tokens of its answer so far
    # Its answer is complete (end of sequence, max_tokens or a stop string): the row's tokens from here on are not
    # part of it (padding, or those generated while its end takes effect).
    ended: bool = False
    # A stream's or stop strings' answer so far (a local target): decoded once, token by token, for the stream and
    # to find a stop string as soon as one appears.
    text: _IncrementalText | None = None
    rewritten_sent: bool = False  # a request retried alone after its batch failed announces itself once

    def batch_key(self) -> tuple:
        """Requests with the same key decode the same way and can share one ``generate()`` call."""
        if self.temperature == 0:
            return ("greedy",)
        if self.seed is None:
            return ("sampled", self.temperature, self.top_p)
        return ("seeded", id(self))  # alone: the same seed gives the same answer, whatever else was queued


@dataclass
class _Answer:
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    extras: dict = field(default_factory=dict)


class BatchingWorker:
    """The one thread that generates: it takes what is queued (waiting up to ``batch_wait_ms`` after the first
    request for more, up to ``max_batch_size``), splits it by decoding settings and runs each part through
    :func:`~hf_sentinel.generation.generate` as one batch. Defenses keep per-batch state (the red flag's
    processors), so generation never runs on two threads at once."""

    def __init__(self, model, tokenizer, defenses: list[Defense], max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS):
        self.model, self.tokenizer, self.defenses = model, tokenizer, list(defenses)
        self.max_batch_size, self.batch_wait = max_batch_size, batch_wait_ms / 1000
        self.local = not isinstance(model, RemoteChatTarget)
        self.stops = stop_token_ids(model, tokenizer) if self.local else set()
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the latest generate() calls' batch sizes
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hf-sentinel-generation", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, deadline = [first], time.monotonic() + self.batch_wait
            while len(jobs) < self.max_batch_size:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:  # stop after this batch
                    self._queue.put(None)
                    break
                jobs.append(job)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.batch_key(), []).append(job)
            for group in groups.values():
                try:
                    self._generate(group)
                except Exception as error:  # noqa: BLE001 - the worker must outlive anything
                    logger.exception("the generation worker failed on a batch")
                    for job in group:  # an answer already sent stays; the others end with this error
                        job.emit(("error", error))

    def _generate(self, jobs: list[_Job]) -> None:
        try:
            result = self._call_generate(jobs)
        except Exception as error:  # noqa: BLE001 - one request's failure must not fail the others
            if len(jobs) == 1:
                logger.exception("generation failed")
                jobs[0].emit(("error", error))
                return
            # Find the request at fault: the others are answered again, alone (unless they already streamed).
            for job in jobs:
                if job.stream and job.generated:
                    job.emit(("error", error))
                else:
                    self._generate([job])
            return
        for i, job in enumerate(jobs):
            job.emit(("done", self._answer(job, result, i)))

    @staticmethod
    def _answer(job: _Job, result, i: int) -> _Answer:
        """Row ``i`` of a ``generate()`` result as the request asked for it: cut before its first stop string."""
        content, finish_reason = result.responses[i], result.finish_reasons[i] if result.finish_reasons else "stop"
        completion_tokens = len(result.token_ids[i]) if result.token_ids else 0
        if job.stop_strings and finish_reason != "content_filter":  # a defense's answer (a refusal) stays whole
            # A local row was decoded token by token up to its end, unstripped (generate() strips the answer, which
            # would hide a stop string ending in whitespace, "User: "); a remote target's answer only comes whole.
            text = job.text.shown if job.text is not None else content
            cut = job.stop_strings.find(text)
            if cut is not None:
                # Stripped, as every answer is. Counted: the tokens up to the one the stop string ends in, that one
                # included even when the stop string ends inside it (as vLLM counts), not those the row went on to
                # generate while its end took effect (a remote target's tokens are not counted: 0).
                content, finish_reason, completion_tokens = text[:cut].strip(), "stop", job.generated
        return _Answer(content, finish_reason, result.prompt_tokens[i] if result.prompt_tokens else 0,
                       completion_tokens, result.extras[i])

    def _call_generate(self, jobs: list[_Job]):
        first = jobs[0]
        limits = [job.max_tokens for job in jobs]
        settings = GenerationSettings.at_temperature(first.temperature, max_new_tokens=max(limits), top_p=first.top_p,
                                                     seed=first.seed, batch_size=len(jobs))

        def rewritten(conversations, extras):
            for job, conversation, extra in zip(jobs, conversations, extras):
                if not job.rewritten_sent:
                    job.rewritten_sent = True
                    job.emit(("rewritten", conversation, dict(extra)))

        def tokens(indices, new_tokens):
            for i, token in zip(indices, new_tokens):
                job = jobs[i]
                job.ended = job.ended or token in self.stops or job.generated >= job.max_tokens
                if job.ended:
                    continue
                job.generated += 1
                if job.text is None:
                    continue
                searched = len(job.text.shown)
                new_text = job.text.add(token)
                if job.stream and new_text:  # the stream's handler holds back what may be a stop string
                    job.emit(("text", new_text))
                if job.stop_strings:
                    job.ended = job.stop_strings.find(job.text.shown, searched) is not None

        for job in jobs:
            job.generated, job.ended = 0, False
            job.text = _IncrementalText(self.tokenizer) if (job.stop_strings or job.stream) and self.local else None
        self.batch_sizes.append(len(jobs))
        # A row whose answer is complete stops generating at the next step, while the rest of the batch goes on.
        streaming = (dict(on_tokens=tokens, stop_requested=lambda i: jobs[i].cancelled or jobs[i].ended)
                     if self.local else {})
        return generate(self.model, self.tokenizer, [job.conversation for job in jobs], settings, self.defenses,
                        on_rewrite=rewritten, max_new_tokens=limits, **streaming)


# ------------------------------------------------------------------------------------------------------------ app


def create_app(model, tokenizer, defenses: list[Defense] = (), model_name: str = "default",
               max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, max_messages: int = DEFAULT_MAX_MESSAGES,
               api_keys: list[str] = (), max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
               batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> FastAPI:
    """The FastAPI app: OpenAI's ``/v1/chat/completions`` (streaming or not) and ``/v1/models``, plus ``/health``.

    ``max_prompt_tokens`` and ``max_messages`` bound what one request may send; the prompt is also refused when
    it leaves fewer than the request's ``max_tokens`` positions in the model's context. ``api_keys``: when given,
    every ``/v1`` request must send one of them as ``Authorization: Bearer KEY``. ``max_batch_size`` and
    ``batch_wait_ms`` shape the batches (``max_batch_size=1``: one request at a time).
    """
    check_limits(max_prompt_tokens, max_messages, max_batch_size, batch_wait_ms)
    if tokenizer is not None and not tokenizer.chat_template:
        raise ValueError(f"The target's tokenizer ({tokenizer.name_or_path or type(tokenizer).__name__}) has no chat "
                         f"template, so it cannot serve chat completions; serve a chat/instruct model.")
    if any(not key.strip() for key in api_keys):
        raise ValueError("An API key (--api-key) is empty; give a non-empty key, or none to serve without keys.")
    defense = describe(list(defenses))
    worker = BatchingWorker(model, tokenizer, defenses, max_batch_size, batch_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.stop()  # runs after the server has finished the requests in flight

    app = FastAPI(title="hf-sentinel", description=f"{model_name} guarded by {defense}", lifespan=lifespan)
    app.state.worker = worker
    created = int(time.time())
    # A remote target (or a model without the attribute) has no known context size.
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    def authorized(request: Request) -> None:
        if not api_keys:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise APIError("Missing API key: this server needs one, sent as the header 'Authorization: Bearer KEY' "
                           "(the openai client's api_key=...).", status=401, code="invalid_api_key")
        if not any(hmac.compare_digest(key.encode(), allowed.encode()) for allowed in api_keys):
            raise APIError("Incorrect API key; send one that `hf-sentinel serve --api-key` was given.", status=401,
                           code="invalid_api_key")

    @app.exception_handler(APIError)
    def api_error(request: Request, error: APIError):
        return _error(error.status, error.message, error.param, code=error.code)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, error: RequestValidationError):
        # Pydantic's own 422 lists every problem in its own shape; OpenAI clients expect one 400 message.
        problems = [(None, f"the body is not valid JSON ({e.get('ctx', {}).get('error', e['msg'])})")
                    if e["type"] == "json_invalid" else (_param(e["loc"]), e["msg"]) for e in error.errors()]
        message = "; ".join(f"{param}: {msg}" if param else msg for param, msg in problems)
        return _error(400, f"Invalid request: {message}. Send a JSON body like {{\"messages\": [{{\"role\": "
                           f"\"user\", \"content\": \"Hello\"}}]}}.", problems[0][0] if problems else None)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail), None)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_name, "defense": defense}

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "hf-sentinel",
                "hf_sentinel": {"defense": defense, "defenses": [d.spec for d in defenses if d.spec != "none"]}}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorized)])
    def one_model(name: str):
        if name != model_name:
            raise APIError(f"The model {name!r} is not served here; this server serves {model_name!r}.", "model",
                           status=404, code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(request: ChatCompletionRequest):
        messages = [m.model_dump() for m in request.messages]
        max_tokens, max_tokens_param = _check(messages, request, max_messages)
        stop_strings = _stop_strings(request.stop)
        if tokenizer is not None:
            _check_length(tokenizer, messages, max_tokens, max_tokens_param, max_prompt_tokens, context)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job = _Job(messages, max_tokens, request.temperature, request.top_p, request.seed,
                   emit=functools.partial(_emit, loop, events), stop_strings=stop_strings, stream=request.stream)
        worker.submit(job)
        reply = _Reply(model_name, defense)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(reply.stream(job, events, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        while True:
            event = await events.get()
            if event[0] == "error":
                return JSONResponse(status_code=500, content=_generation_failed(event[1]))
            if event[0] == "done":
                return reply.completion(event[1])

    return app


def _emit(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, event: tuple) -> None:
    """Hand a worker event to the request's handler on the server's event loop (from the worker thread)."""
    with contextlib.suppress(RuntimeError):  # the loop has closed: the server is gone, nobody waits for this
        loop.call_soon_threadsafe(events.put_nowait, event)


class _Reply:
    """One request's answer in OpenAI's shapes: a ``chat.completion``, or the ``chat.completion.chunk`` events of
    a stream."""

    def __init__(self, model_name: str, defense: str):
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        self.model_name, self.defense = model_name, defense

    def _usage(self, answer: _Answer) -> dict:
        return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens}

    def completion(self, answer: _Answer) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.content},
                         "finish_reason": answer.finish_reason, "logprobs": None}],
            "usage": self._usage(answer),
            "hf_sentinel": {"defense": self.defense, **answer.extras},
        }

    def _chunk(self, delta: dict, finish_reason: str | None = None, include_usage: bool = False, **extension) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        if include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk, counted on the last one
        if extension:
            chunk["hf_sentinel"] = extension
        return f"data: {json.dumps(chunk)}\n\n"

    async def stream(self, job: _Job, events: asyncio.Queue, include_usage: bool):
        shown, sent = "", 0  # the answer's text so far, and how much of it has gone out
        try:
            while True:
                event = await events.get()
                kind = event[0]
                if kind == "rewritten":  # before the first token: the sentinel's suffix is already decided
                    yield self._chunk({"role": "assistant", "content": ""}, include_usage=include_usage,
                                      defense=self.defense, **event[2])
                elif kind == "text":
                    shown += event[1]
                    # Only text that no later token can turn into a stop string goes out (the worker ends the row at
                    # one); what waited goes out with the last chunk if no stop string came.
                    end = job.stop_strings.safe_prefix_length(shown, sent) if job.stop_strings else len(shown)
                    if end > sent:
                        yield self._chunk({"content": shown[sent:end]}, include_usage=include_usage)
                        sent = end
                elif kind == "error":
                    yield f"data: {json.dumps(_generation_failed(event[1]))}\n\n"
                    break
                else:
                    answer: _Answer = event[1]
                    report = {"defense": self.defense, **answer.extras}
                    shown = shown[:sent]
                    if answer.finish_reason == "content_filter" and shown.strip() and answer.content != shown.strip():
                        # A defense replaced what was streamed: say so, and send the replacement.
                        yield self._chunk({"content": f"\n\n{answer.content}"}, answer.finish_reason, include_usage,
                                          **report, retracted=True, content=answer.content)
                    elif answer.content.startswith(shown) and answer.content != shown:
                        # What was not streamed token by token: a remote target's answer, a refusal before any token,
                        # the tail held back in case it began a stop string (which did not come).
                        yield self._chunk({"content": answer.content[len(shown):]}, answer.finish_reason,
                                          include_usage, **report)
                    else:
                        yield self._chunk({}, answer.finish_reason, include_usage, **report)
                    if include_usage:
                        usage = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model_name, "choices": [], "usage": self._usage(answer)}
                        yield f"data: {json.dumps(usage)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True  # a client that went away stops its row; after the end, this changes nothing


class _IncrementalText:
    """The text of a growing answer, token by token, decoding only a short window of the latest tokens (as vLLM and
    TGI do): decoding the whole answer at every token would cost time quadratic in its length.

    >>> from hf_sentinel.defaults import tiny_tokenizer
    >>> tokenizer = tiny_tokenizer()
    >>> ids = tokenizer("  Hello there, world", add_special_tokens=False)["input_ids"]
    >>> text = _IncrementalText(tokenizer)
    >>> "".join(text.add(i) for i in ids) == tokenizer.decode(ids).lstrip() == text.shown
    True
    """

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.shown = tokenizer, [], ""
        self._prefix = self._read = 0  # the window: tokens[_prefix:_read] were decoded and shown already

    def add(self, token: int) -> str:
        """The new text ``token`` completes (``""`` while a character is split over several tokens); leading
        whitespace of the answer is dropped, as in the finished answer."""
        self.tokens.append(token)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        before, after = decode(self.tokens[self._prefix:self._read]), decode(self.tokens[self._prefix:])
        # A character split over several tokens decodes to U+FFFD until its last token arrives.
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        delta = after[len(before):]
        self._prefix, self._read = self._read, len(self.tokens)
        if not self.shown:
            delta = delta.lstrip()
        self.shown += delta
        return delta


def _generation_failed(error: Exception) -> dict:
    """Log a failure inside generation and return its OpenAI error body (HTTP 500, or the last event of a stream)."""
    logger.error("generation failed", exc_info=(type(error), error, error.__traceback__))
    return _error_body(f"Generation failed: {type(error).__name__}: {error}. The request was valid; the server logged "
                       f"the traceback and keeps serving.", None, "server_error")


def _check(messages: list[dict], request: ChatCompletionRequest, max_messages: int) -> tuple[int, str]:
    """Raise :class:`APIError` on what the model must not see; return the number of new tokens to generate and
    the parameter that set it."""
    if request.n != 1:
        raise APIError(f"n={request.n} is not supported: this server gives one answer per request; send n=1 and "
                         f"repeat the request for more answers.", "n")
    if not messages:
        raise APIError("messages is empty; send at least one {'role': 'user', 'content': ...} message.", "messages")
    if len(messages) > max_messages:
        raise APIError(f"{len(messages)} messages is more than this server accepts ({max_messages}); send a shorter "
                         f"conversation.", "messages")
    for i, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise APIError(f"messages[{i}].role {message['role']!r} is not supported; use one of "
                             f"{', '.join(ROLES)}.", f"messages[{i}].role")
        if not message["content"].strip():
            raise APIError(f"messages[{i}].content is empty; every message needs some text.",
                             f"messages[{i}].content")
    if messages[-1]["role"] != "user":
        raise APIError(f"The last message must come from the user, got role {messages[-1]['role']!r}; end the "
                         f"conversation with the user's turn.", f"messages[{len(messages) - 1}].role")
    # `is not None`, not `or`: max_tokens=0 is an error, not a request for the default.
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(request, param)
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise APIError(f"{param} must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}.", param)
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise APIError(f"temperature must be >= 0 (0: greedy), got {request.temperature}.", "temperature")
    if not (math.isfinite(request.top_p) and 0 < request.top_p <= 1):
        raise APIError(f"top_p must be in (0, 1], got {request.top_p}.", "top_p")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise APIError(f"seed must be between 0 and {MAX_SEED}, got {request.seed}.", "seed")
    return max_tokens, param


def _stop_strings(stop: Any) -> StopSequences | None:
    """Raise :class:`APIError` on a ``stop`` that OpenAI would refuse; return its strings (``None``: no stop)."""
    fix = f'send a string or a list of at most {MAX_STOP_STRINGS} strings, e.g. "stop": ["\\n\\n", "User:"]'
    if stop is None:
        return None
    strings = [stop] if isinstance(stop, str) else stop
    if not isinstance(strings, list):
        raise APIError(f"stop must be a string or a list of strings, got {json.dumps(stop)}; {fix}.", "stop")
    if len(strings) > MAX_STOP_STRINGS:
        raise APIError(f"stop has {len(strings)} strings, more than the {MAX_STOP_STRINGS} allowed; {fix}.", "stop")
    for i, string in enumerate(strings):
        param = "stop" if isinstance(stop, str) else f"stop[{i}]"
        if not isinstance(string, str):
            raise APIError(f"{param} must be a string, got {json.dumps(string)}; {fix}.", param)
        if not string:
            # "" is in every text: the answer would always be empty.
            raise APIError(f"{param} is empty; every stop string needs at least one character (leave stop out to "
                           f"end answers only where the model ends them).", param)
    return StopSequences(strings) if strings else None


def _check_length(tokenizer, messages: list[dict], max_tokens: int, max_tokens_param: str, max_prompt_tokens: int,
                  context: int | None) -> None:
    """Refuse a prompt (the messages as the chat template renders them) that is over the server's limit or that
    leaves fewer than ``max_tokens`` positions in the model's context."""
    limit, why, fix = max_prompt_tokens, f"this server's limit of {max_prompt_tokens}", ""
    if context is not None and context - max_tokens < limit:
        limit = context - max_tokens
        why = (f"the {limit} that the model's context of {context} tokens leaves next to "
               f"{max_tokens_param}={max_tokens}")
        fix = ", or ask for fewer new tokens"
    if limit < 1:
        raise APIError(f"{max_tokens_param}={max_tokens} leaves no room for a prompt in the model's context of "
                         f"{context} tokens; ask for fewer new tokens.", max_tokens_param)
    length = len(tokenizer(render(tokenizer, messages, None, chat=True), add_special_tokens=False)["input_ids"])
    if length > limit:
        raise APIError(f"The conversation is {length} tokens long (with the chat template), over {why}. Send fewer "
                         f"or shorter messages{fix}.", "messages")


def _param(location) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``; ``("body",)`` -> ``body``."""
    parts = location[1:] if len(location) > 1 and location[0] == "body" else location
    param = ""
    for part in parts:
        param += f"[{part}]" if isinstance(part, int) else f"{'.' if param else ''}{part}"
    return param or None


def _error_body(message: str, param: str | None, kind: str = "invalid_request_error",
                code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param: str | None, kind: str = "invalid_request_error",
           code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=_error_body(message, param, kind, code))


def serve(model, tokenizer, defenses: list[Defense], host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "default", max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
          max_messages: int = DEFAULT_MAX_MESSAGES, api_keys: list[str] = (),
          max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
          shutdown_timeout: int = 60) -> None:
    """Run :func:`create_app` with uvicorn until interrupted. On SIGINT/SIGTERM the server stops taking
    connections and finishes the requests in flight (up to ``shutdown_timeout`` seconds) before it exits."""
    import uvicorn

    app = create_app(model, tokenizer, defenses, model_name, max_prompt_tokens, max_messages, api_keys,
                     max_batch_size, batch_wait_ms)
    # uvicorn raises the signal that stopped it again once it has shut down gracefully; with Python's default
    # handlers that kills the process (exit -15) or raises KeyboardInterrupt. Handlers that do nothing let serve()
    # return, so a graceful stop exits 0; the caller's handlers are back afterwards.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=shutdown_timeout)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
