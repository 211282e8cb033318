"""What the Gradio Spaces in ``spaces/<name>/app.py`` share: settings, input limits, lazy loading of the target and
the defenses (a defense that fails to load is reported, the others keep working), and token streaming through
:func:`hf_sentinel.generation.stream` (the one guarded generation, with every defense hook).

Every Space runs locally with ``python spaces/<name>/app.py`` (127.0.0.1, port 7860 or ``--port``) and on the Hub
as it is (the Hub sets ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``). Settings come from flags or environment
variables, so tests and small machines can keep answers short::

    python spaces/sentinel/app.py --port 7861 --max-new-tokens 16 --target path/to/model
    HF_SENTINEL_SPACE_MAX_NEW_TOKENS=16 python spaces/arena/app.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading

import gradio as gr

from .defenses import Defense, parse_defense
from .evaluation import load_target
from .generation import GenerationSettings, stream

ENV_PREFIX = "HF_SENTINEL_SPACE_"
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_MAX_PROMPT_CHARS = 1000
#: Shared look of every Space (passed to ``launch``, the Gradio 6 way).
THEME = gr.themes.Soft(primary_hue="red", secondary_hue="slate")
CSS = """
.answer-box textarea { font-size: 0.95rem; }
.status-line { min-height: 1.5em; }
"""


def _env(name: str, default):
    return os.environ.get(ENV_PREFIX + name, default)


def space_parser(description: str) -> argparse.ArgumentParser:
    """The flags every Space takes; each defaults to its ``HF_SENTINEL_SPACE_<NAME>`` environment variable."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", default=_env("TARGET", "default"),
                        help="the model the defenses guard: default (embedded SmolLM2-135M-Instruct), a folder or a "
                             "Hub id [HF_SENTINEL_SPACE_TARGET]")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (loopback by default) [GRADIO_SERVER_NAME]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port to listen on [GRADIO_SERVER_PORT]")
    parser.add_argument("--max-new-tokens", type=int, default=int(_env("MAX_NEW_TOKENS", DEFAULT_MAX_NEW_TOKENS)),
                        help="length of every answer, in tokens [HF_SENTINEL_SPACE_MAX_NEW_TOKENS]")
    parser.add_argument("--max-prompt-chars", type=int,
                        default=int(_env("MAX_PROMPT_CHARS", DEFAULT_MAX_PROMPT_CHARS)),
                        help="longest prompt accepted, in characters [HF_SENTINEL_SPACE_MAX_PROMPT_CHARS]")
    return parser


def check_settings(args) -> None:
    """Fail at start-up, with the flag to fix, rather than on the first request."""
    if args.max_new_tokens < 1:
        raise SystemExit(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    if args.max_prompt_chars < 1:
        raise SystemExit(f"--max-prompt-chars must be at least 1, got {args.max_prompt_chars}.")


def check_prompt(prompt: str | None, max_chars: int) -> str:
    """The prompt, stripped; a :class:`gradio.Error` (shown in the UI, raised by API clients) when it is empty or
    longer than ``max_chars``."""
    text = (prompt or "").strip()
    if not text:
        raise gr.Error("The prompt is empty: type a request first.", title="Empty prompt")
    if len(text) > max_chars:
        raise gr.Error(f"The prompt has {len(text)} characters; this Space accepts at most {max_chars}. "
                       f"Shorten it (or start the app with a larger --max-prompt-chars).", title="Prompt too long")
    return text


def load_failure(spec: str, error: Exception) -> str:
    """The message a Space shows for a defense that could not be loaded."""
    return f"⚠️ The defense `{spec}` could not be loaded, so it is left out: {type(error).__name__}: {error}"


class ModelStore:
    """The target and the defenses of one Space, loaded on first use and kept.

    A defense that fails to load is remembered with its error (see :meth:`defense`), so the Space reports it on
    every request and goes on with the others. :attr:`generation_lock` serialises generation: defenses keep
    per-batch state, and a shared base model switches adapters on and off. (A plain lock, not an RLock: Gradio
    may resume a streaming handler in another worker thread than the one that started it.)
    """

    def __init__(self, target: str = "default"):
        self.target_spec = target
        self.lock = threading.RLock()  # loading
        self.generation_lock = threading.Lock()
        self._target = None
        self._defenses: dict[str, Defense | Exception] = {}

    def target(self):
        """``(model, tokenizer)`` of the target; a :class:`gradio.Error` when it cannot be loaded."""
        with self.lock:
            if self._target is None:
                try:
                    self._target = load_target(self.target_spec)
                except (OSError, ValueError, ModuleNotFoundError) as error:
                    raise gr.Error(f"The target `{self.target_spec}` could not be loaded: {error}",
                                   title="No target") from error
            return self._target

    def defense(self, spec: str, loader=None) -> Defense:
        """The defense named by ``spec`` (built by ``loader()`` if given, else :func:`parse_defense`); re-raises the
        error of a failed load, every time it is asked for."""
        with self.lock:
            if spec not in self._defenses:
                try:
                    self._defenses[spec] = loader() if loader else parse_defense(spec)
                except Exception as error:  # any failure, reported in the UI: the other defenses keep working
                    self._defenses[spec] = error
            loaded = self._defenses[spec]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    def try_defense(self, spec: str, loader=None) -> tuple[Defense | None, str | None]:
        """``(defense, None)``, or ``(None, message)`` when it could not be loaded."""
        try:
            return self.defense(spec, loader), None
        except Exception as error:
            return None, load_failure(spec, error)


# ---------------------------------------------------------------------------------------------------- streaming


def stream_guarded(model, tokenizer, conversation: list[dict], defenses: list[Defense] = (),
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, logits_processors: list = (),
                   lock: threading.Lock | None = None):
    """Answer one conversation under ``defenses`` (greedy), yielding a :class:`~hf_sentinel.generation.StreamState`
    after each new token: :func:`hf_sentinel.generation.stream` while holding ``lock`` (a Space's generation lock).

    The extra ``logits_processors`` run before the defenses' (they see the raw scores). The first state comes before
    any token, with the rewritten conversation and the extras (e.g. the sentinel's suffix); the last one
    (``done=True``) carries the finalized answer. Closing the generator early stops the generation.

    >>> from hf_sentinel.defaults import tiny_model
    >>> from hf_sentinel.defenses import SuffixDefense
    >>> model, tokenizer = tiny_model()
    >>> states = list(stream_guarded(model, tokenizer, [{"role": "user", "content": "Hi"}], [SuffixDefense()],
    ...                              max_new_tokens=3))
    >>> states[0].conversation[-1]["content"].startswith("Hi\\n\\nIf the request above"), states[-1].done
    (True, True)
    """
    with lock or contextlib.nullcontext():
        yield from stream(model, tokenizer, conversation, GenerationSettings(max_new_tokens=max_new_tokens),
                          defenses, logits_processor=logits_processors)


def token_pieces(tokenizer, token_ids: list[int]) -> list[str]:
    """The text each token adds to the answer (multi-byte characters split across tokens stay readable)."""
    pieces, previous = [], ""
    for end in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        pieces.append(text[len(previous):] if text.startswith(previous) else text)
        previous = text
    return pieces


def launch(demo: gr.Blocks, args, **kwargs):
    """Start a Space: queue on (one generation at a time, the rest wait their turn), theme and CSS at launch.
    ``kwargs`` go to ``Blocks.launch`` (e.g. ``prevent_thread_lock=True`` to serve from a test)."""
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo.launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS,
                       footer_links=["api", "gradio"], show_error=True, **kwargs)


def message_text(message: dict) -> str:
    """The text of a chat message as Gradio's Chatbot passes it (a string, or a list of content parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
