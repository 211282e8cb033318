"""``hf-sentinel serve``: an OpenAI-compatible chat-completions server for any target under any defenses.

Deploy a guarded model as a service, or put a local model behind an endpoint that a sentinel elsewhere guards
(:class:`hf_sentinel.sentinel.RemoteChatTarget` speaks to it). Binds to loopback unless told otherwise.

Every request is checked before it reaches the model (roles, empty messages, message count, prompt length in
tokens, sampling parameters); a bad one gets HTTP 400 with OpenAI's error body::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}

An error inside generation gets HTTP 500 with the same shape (``type: server_error``), and the server keeps
serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .defenses import Defense, describe
from .generation import GenerationSettings, generate, render

MAX_TOKENS_LIMIT = 2048
DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_PROMPT_TOKENS = 4096
DEFAULT_MAX_MESSAGES = 64
ROLES = ("system", "user", "assistant")
# torch.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1

logger = logging.getLogger(__name__)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatCompletionRequest(BaseModel):
    model: str = "default"
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, description=f"new tokens to generate (default {DEFAULT_MAX_TOKENS})")
    max_completion_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stream: bool = False


class BadRequest(Exception):
    """A request that must not reach the model: answered with HTTP 400, naming the parameter at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


def check_limits(max_prompt_tokens: int, max_messages: int) -> None:
    """Raise ``ValueError`` on server limits that would refuse every request."""
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens (--max-prompt-tokens) must be at least 1, got {max_prompt_tokens}.")
    if max_messages < 1:
        raise ValueError(f"max_messages (--max-messages) must be at least 1, got {max_messages}.")


def create_app(model, tokenizer, defenses: list[Defense] = (), model_name: str = "default",
               max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
               max_messages: int = DEFAULT_MAX_MESSAGES) -> FastAPI:
    """The FastAPI app; generation is serialised (one request at a time on the model).

    ``max_prompt_tokens`` and ``max_messages`` bound what one request may send; the prompt is also refused when
    it leaves fewer than the request's ``max_tokens`` positions in the model's context.
    """
    check_limits(max_prompt_tokens, max_messages)
    if tokenizer is not None and not tokenizer.chat_template:
        raise ValueError(f"The target's tokenizer ({tokenizer.name_or_path or type(tokenizer).__name__}) has no chat "
                         f"template, so it cannot serve chat completions; serve a chat/instruct model.")
    app = FastAPI(title="hf-sentinel", description=f"{model_name} guarded by {describe(list(defenses))}")
    lock = threading.Lock()
    # A remote target (or a model without the attribute) has no known context size.
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    @app.exception_handler(BadRequest)
    def bad_request(request: Request, error: BadRequest):
        return _error(400, error.message, error.param)

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
        return {"status": "ok", "model": model_name, "defense": describe(list(defenses))}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "hf-sentinel"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatCompletionRequest):
        messages = [m.model_dump() for m in request.messages]
        max_tokens, max_tokens_param = _check(messages, request, max_messages)
        if tokenizer is not None:
            _check_length(tokenizer, messages, max_tokens, max_tokens_param, max_prompt_tokens, context)
        settings = GenerationSettings.at_temperature(request.temperature, max_new_tokens=max_tokens,
                                                     top_p=request.top_p, seed=request.seed or 0, batch_size=1)
        try:
            with lock:
                result = generate(model, tokenizer, [messages], settings, defenses)
        except Exception as error:  # the model or a defense failed: answer this request, keep serving the next
            logger.exception("generation failed")
            return _error(500, f"Generation failed: {type(error).__name__}: {error}. The request was valid; the "
                               f"server logged the traceback and keeps serving.", None, kind="server_error")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.responses[0]},
                         "finish_reason": "stop"}],
            "usage": {"completion_tokens": result.new_tokens},
            "hf_sentinel": {"defense": describe(list(defenses)), **result.extras[0]},
        }

    return app


def _check(messages: list[dict], request: ChatCompletionRequest, max_messages: int) -> tuple[int, str]:
    """Raise :class:`BadRequest` on what the model must not see; return the number of new tokens to generate and
    the parameter that set it."""
    if request.stream:
        raise BadRequest("stream=true is not supported by this server; send stream=false.", "stream")
    if not messages:
        raise BadRequest("messages is empty; send at least one {'role': 'user', 'content': ...} message.", "messages")
    if len(messages) > max_messages:
        raise BadRequest(f"{len(messages)} messages is more than this server accepts ({max_messages}); send a shorter "
                         f"conversation.", "messages")
    for i, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise BadRequest(f"messages[{i}].role {message['role']!r} is not supported; use one of "
                             f"{', '.join(ROLES)}.", f"messages[{i}].role")
        if not message["content"].strip():
            raise BadRequest(f"messages[{i}].content is empty; every message needs some text.",
                             f"messages[{i}].content")
    if messages[-1]["role"] != "user":
        raise BadRequest(f"The last message must come from the user, got role {messages[-1]['role']!r}; end the "
                         f"conversation with the user's turn.", f"messages[{len(messages) - 1}].role")
    # `is not None`, not `or`: max_tokens=0 is an error, not a request for the default.
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(request, param)
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"{param} must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}.", param)
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise BadRequest(f"temperature must be >= 0 (0: greedy), got {request.temperature}.", "temperature")
    if not (math.isfinite(request.top_p) and 0 < request.top_p <= 1):
        raise BadRequest(f"top_p must be in (0, 1], got {request.top_p}.", "top_p")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise BadRequest(f"seed must be between 0 and {MAX_SEED}, got {request.seed}.", "seed")
    return max_tokens, param


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
        raise BadRequest(f"{max_tokens_param}={max_tokens} leaves no room for a prompt in the model's context of "
                         f"{context} tokens; ask for fewer new tokens.", max_tokens_param)
    length = len(tokenizer(render(tokenizer, messages, None, chat=True), add_special_tokens=False)["input_ids"])
    if length > limit:
        raise BadRequest(f"The conversation is {length} tokens long (with the chat template), over {why}. Send fewer "
                         f"or shorter messages{fix}.", "messages")


def _param(location) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``; ``("body",)`` -> ``body``."""
    parts = location[1:] if len(location) > 1 and location[0] == "body" else location
    param = ""
    for part in parts:
        param += f"[{part}]" if isinstance(part, int) else f"{'.' if param else ''}{part}"
    return param or None


def _error(status: int, message: str, param: str | None, kind: str = "invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(status_code=status, content=body)


def serve(model, tokenizer, defenses: list[Defense], host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "default", max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
          max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
    import uvicorn

    app = create_app(model, tokenizer, defenses, model_name, max_prompt_tokens, max_messages)
    uvicorn.run(app, host=host, port=port, log_level="warning")
