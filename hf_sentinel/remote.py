"""A black-box target behind an OpenAI-compatible chat-completions endpoint (as the paper guarded GPT-3.5)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx


class RemoteChatTarget:
    """Answers conversations by POSTing them to ``{base_url}/chat/completions``.

    Any server speaking the OpenAI chat-completions protocol works: ``hf-sentinel serve``, vLLM, TGI, or a
    hosted API (pass ``api_key``). Only text goes over the wire, so a local sentinel composes with it at text
    level; defenses that need the target's logits or weights cannot guard it. Up to ``max_concurrency`` requests
    are in flight at once, because a batching server answers concurrent requests together.
    """

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 60.0,
                 max_concurrency: int = 8):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Target endpoint {base_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8000/v1.")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1 (1 sends requests one by one), "
                             f"got {max_concurrency}.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"RemoteChatTarget({self.base_url!r}, model={self.model!r})"

    @property
    def name_or_path(self) -> str:
        return self.base_url

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 48, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> list[str]:
        """One answer per conversation, in input order; the first failure in input order is raised.

        The requests share one connection pool and are sent concurrently (``max_concurrency`` at most)."""
        settings = (max_new_tokens, temperature if do_sample else 0.0, top_p, seed)
        workers = min(self.max_concurrency, len(conversations))
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        with httpx.Client(headers=self._headers, timeout=self.timeout, limits=limits) as client:
            if workers <= 1:
                return [self._complete(client, conv, *settings) for conv in conversations]
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(self._complete, client, conv, *settings) for conv in conversations]
                try:
                    return [future.result() for future in futures]
                except BaseException:
                    for future in futures:  # don't send what is still queued; running requests end on their own
                        future.cancel()
                    raise

    def _complete(self, client: httpx.Client, messages, max_tokens, temperature, top_p, seed) -> str:
        # "stream" is explicit: some servers and proxies stream unless told not to.
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "top_p": top_p, "stream": False}
        if seed is not None:
            payload["seed"] = seed
        url = f"{self.base_url}/chat/completions"
        try:
            response = client.post(url, json=payload)
        except httpx.TimeoutException as error:
            raise TimeoutError(f"Target endpoint {url} did not answer within {self.timeout:g} s; check that the "
                               f"server is up, or raise request_timeout.") from error
        except httpx.TransportError as error:
            raise ConnectionError(f"Cannot reach target endpoint {url}: {error}. Start the server (e.g. "
                                  f"`hf-sentinel serve`) or fix the URL.") from error
        if response.status_code != 200:
            raise ConnectionError(f"Target endpoint {url} answered HTTP {response.status_code}: "
                                  f"{_error_message(response)}")
        # Some servers stream anyway (server-sent events), whatever the request said.
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                return _join_stream(response.text)
            except ConnectionError as error:
                raise ConnectionError(f"Target endpoint {url} streamed an error: {error}") from None
        return response.json()["choices"][0]["message"]["content"]


def _join_stream(text: str) -> str:
    """The answer carried by a chat-completions server-sent-event stream: its chunks' ``delta.content`` joined, up to
    ``data: [DONE]``. An error event raises :class:`ConnectionError` with the server's message.

    >>> _join_stream('data: {"choices": [{"delta": {"role": "assistant"}}]}\\n\\n'
    ...              'data: {"choices": [{"delta": {"content": "Hel"}}]}\\n\\n'
    ...              'data: {"choices": [{"delta": {"content": "lo"}}]}\\n\\ndata: [DONE]\\n\\n')
    'Hello'
    """
    parts = []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping") and "event:"/"id:" fields
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if event.get("error"):
            error = event["error"]
            raise ConnectionError(str(error.get("message", error) if isinstance(error, dict) else error))
        choices = event.get("choices") or [{}]  # a final usage chunk has no choices
        parts.append((choices[0].get("delta") or {}).get("content") or "")
    return "".join(parts)


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
