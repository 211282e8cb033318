"""``hf-sentinel serve``: an OpenAI-compatible chat-completions server for any target under any defenses.

Deploy a guarded model as a service, or put a local model behind an endpoint that a sentinel elsewhere guards
(:class:`hf_sentinel.sentinel.RemoteChatTarget` speaks to it). Binds to loopback unless told otherwise.
"""

from __future__ import annotations

import threading
import time
import uuid

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from .defenses import Defense, describe
from .generation import GenerationSettings, generate

MAX_TOKENS_LIMIT = 2048


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatCompletionRequest(BaseModel):
    model: str = "default"
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, description="new tokens to generate (default 256)")
    max_completion_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stream: bool = False


def create_app(model, tokenizer, defenses: list[Defense] = (), model_name: str = "default") -> FastAPI:
    """The FastAPI app; generation is serialised (one request at a time on the model)."""
    app = FastAPI(title="hf-sentinel", description=f"{model_name} guarded by {describe(list(defenses))}")
    lock = threading.Lock()

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_name, "defense": describe(list(defenses))}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "hf-sentinel"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatCompletionRequest):
        messages = [m.model_dump() for m in request.messages]
        max_tokens = request.max_completion_tokens or request.max_tokens or 256
        problem = _check(messages, max_tokens, request)
        if problem:
            raise HTTPException(status_code=400, detail=problem)
        settings = GenerationSettings(max_new_tokens=max_tokens, do_sample=request.temperature > 0,
                                      temperature=request.temperature or 1.0, top_p=request.top_p,
                                      seed=request.seed or 0, batch_size=1)
        with lock:
            result = generate(model, tokenizer, [messages], settings, defenses)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.responses[0]},
                         "finish_reason": "stop"}],
            "usage": {"completion_tokens": result.new_tokens},
            "hf_sentinel": {"defense": describe(list(defenses)), **result.extras[0]},
        }

    return app


def _check(messages: list[dict], max_tokens: int, request: ChatCompletionRequest) -> str | None:
    if request.stream:
        return "stream=true is not supported by this server; send stream=false."
    if not messages:
        return "messages is empty; send at least one {'role': 'user', 'content': ...} message."
    if messages[-1]["role"] != "user":
        return "The last message must come from the user."
    if not messages[-1]["content"].strip():
        return "The last user message is empty."
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        return f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}."
    if request.temperature < 0:
        return f"temperature must be >= 0, got {request.temperature}."
    return None


def serve(model, tokenizer, defenses: list[Defense], host: str = "127.0.0.1", port: int = 8000,
          model_name: str = "default") -> None:
    import uvicorn

    uvicorn.run(create_app(model, tokenizer, defenses, model_name), host=host, port=port, log_level="warning")
