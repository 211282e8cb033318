"""A black-box target behind an OpenAI-compatible chat-completions endpoint (as the paper guarded GPT-3.5)."""

from __future__ import annotations

import httpx


class RemoteChatTarget:
    """Answers conversations by POSTing them to ``{base_url}/chat/completions``.

    Any server speaking the OpenAI chat-completions protocol works: ``hf-sentinel serve``, vLLM, TGI, or a
    hosted API (pass ``api_key``). Only text goes over the wire, so a local sentinel composes with it at text
    level; defenses that need the target's logits or weights cannot guard it.
    """

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Target endpoint {base_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8000/v1.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"RemoteChatTarget({self.base_url!r}, model={self.model!r})"

    @property
    def name_or_path(self) -> str:
        return self.base_url

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 48, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> list[str]:
        """One answer per conversation (requests are sent one by one, in order)."""
        return [self._complete(conv, max_new_tokens, temperature if do_sample else 0.0, top_p, seed)
                for conv in conversations]

    def _complete(self, messages, max_tokens, temperature, top_p, seed) -> str:
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "top_p": top_p}
        if seed is not None:
            payload["seed"] = seed
        url = f"{self.base_url}/chat/completions"
        try:
            response = httpx.post(url, json=payload, headers=self._headers, timeout=self.timeout)
        except httpx.TimeoutException as error:
            raise TimeoutError(f"Target endpoint {url} did not answer within {self.timeout:g} s; check that the "
                               f"server is up, or raise request_timeout.") from error
        except httpx.TransportError as error:
            raise ConnectionError(f"Cannot reach target endpoint {url}: {error}. Start the server (e.g. "
                                  f"`hf-sentinel serve`) or fix the URL.") from error
        if response.status_code != 200:
            raise ConnectionError(f"Target endpoint {url} answered HTTP {response.status_code}: "
                                  f"{_error_message(response)}")
        return response.json()["choices"][0]["message"]["content"]


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
