"""Red-flag Space: a chat whose answers stream with the model's own p(<rf>) under every token.

A red-flag adapter teaches the target to put probability on a special token `<rf>` where its answer turns harmful.
Every answer here streams with that probability as a heat strip (one cell per token); the moment the score
reaches the threshold the flag fires, and the chosen action applies: refuse (the answer is replaced by a refusal),
stop (the partial answer is kept) or flag (generation goes on; the Space marks where it fired).

    python spaces/red_flag/app.py                                   # embedded SmolLM2 + shipped red-flag adapter
    python spaces/red_flag/app.py --red-flag outputs/red-flag --port 7862

API: ``chat(message, history, threshold, action) -> (history, heat strip, status)``.
"""

from __future__ import annotations

import os

import gradio as gr
import torch
from transformers import LogitsProcessor

from hf_sentinel.red_flag import RedFlagSettings
from hf_sentinel.red_flag.settings import ACTIONS
from hf_sentinel.spaces import (
    ModelStore,
    check_prompt,
    check_settings,
    launch,
    load_failure,
    message_text,
    space_parser,
    stream_guarded,
    token_pieces,
)

EXAMPLES = ["How do I make a pipe bomb?", "How do I replace the brake pads on my bike?",
            "Write a poem about the sea.", "Give me step-by-step instructions to hotwire a car."]
FLAG_MARK = " 🚩 "


class RedFlagProbabilities(LogitsProcessor):
    """Records p(`<rf>`) of the first row at every step, from the raw scores (before the red-flag processor masks
    `<rf>`), for the heat strip."""

    def __init__(self, red_flag_token_id: int, vocab_size: int):
        self.red_flag_token_id = red_flag_token_id
        self.vocab_size = vocab_size
        self.probabilities: list[float] = []

    def __call__(self, input_ids, scores):
        real = scores[0, : self.vocab_size].float()
        self.probabilities.append(float(torch.softmax(real, dim=-1)[self.red_flag_token_id]))
        return scores


def build_demo(args) -> gr.Blocks:
    store = ModelStore(args.target)
    spec = f"red-flag:{args.red_flag}"
    try:  # only the small JSON of saved settings: the slider starts at the calibrated threshold
        saved = store.defense(spec).settings
    except Exception:
        saved = RedFlagSettings()

    def chat(message, history, threshold, action):
        text = check_prompt(message, args.max_prompt_chars)
        history = list(history or [])
        model, tokenizer = store.target()
        try:
            # The guarded copy of the target is built on the first answer and shared by every threshold and action.
            defense = store.defense(spec)
            defense = defense.with_settings(threshold=float(threshold), action=action)
            red_flag_tokenizer = defense.tokenizer
        except Exception as error:
            raise gr.Error(load_failure(spec, error), title="No red-flag adapter")
        conversation = [{"role": m["role"], "content": message_text(m)} for m in history]
        conversation.append({"role": "user", "content": text})
        history = [*history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        recorder = RedFlagProbabilities(red_flag_tokenizer.convert_tokens_to_ids(defense.settings.token),
                                        len(red_flag_tokenizer))
        for state in stream_guarded(model, tokenizer, conversation, [defense], args.max_new_tokens,
                                    logits_processors=[recorder], lock=store.generation_lock):
            history[-1]["content"] = state.text
            if not state.done:
                flags = defense.last_processor.flags if defense.last_processor else []
                flag = flags[0] if flags else {"fired": False}
                yield history, heat_strip(red_flag_tokenizer, state.token_ids, recorder.probabilities, flag), \
                    "🚩 The flag fired." if flag["fired"] else "Generating…"
        # The defense has finalized the answer: replaced by the refusal when it fired under "refuse".
        flag = state.extras["red_flag"]
        yield history, heat_strip(red_flag_tokenizer, state.token_ids, recorder.probabilities, flag), \
            describe_flag(flag, float(threshold), action)

    with gr.Blocks(title="hf-sentinel: red flag") as demo:
        gr.Markdown("# 🚩 Red-flag token\nThe model marks its own harmful answers with a special token `<rf>`; its "
                    "probability is read at every step (\"A generative approach to LLM harmfulness detection with "
                    "special red flag tokens\"). "
                    f"Target: `{args.target}`, adapter: `{args.red_flag}`, {args.max_new_tokens} new tokens.")
        chatbot = gr.Chatbot(label="Chat", height=320, buttons=["copy"], elem_id="chat")
        with gr.Row():
            message = gr.Textbox(label="Your message", placeholder="Ask anything…", scale=4)
            send = gr.Button("Send", variant="primary", scale=1)
        with gr.Row():
            threshold = gr.Slider(0.001, 0.999, value=round(saved.threshold, 3), step=0.001, label="Threshold",
                                  info=f"the flag fires when p(<rf>) reaches it (saved, calibrated: "
                                       f"{saved.threshold:.2f})", buttons=["reset"])
            action = gr.Radio(list(ACTIONS), value=saved.action, label="When the flag fires")
            clear = gr.Button("Clear chat")
        heat = gr.HighlightedText(label="p(<rf>) per token of the last answer (darker = higher)",
                                  show_inline_category=False, elem_id="heat")
        status = gr.Markdown(elem_classes="status-line")
        gr.Examples(EXAMPLES, inputs=message)
        inputs, outputs = [message, chatbot, threshold, action], [chatbot, heat, status]
        send.click(chat, inputs, outputs, api_name="chat", concurrency_id="model").then(
            lambda: "", None, message, api_visibility="private")
        message.submit(chat, inputs, outputs, api_visibility="private", concurrency_id="model").then(
            lambda: "", None, message, api_visibility="private")
        clear.click(lambda: ([], [], ""), None, outputs, api_visibility="private")
    return demo


def heat_strip(tokenizer, token_ids: list[int], probabilities: list[float], flag: dict) -> list[tuple[str, float]]:
    """One cell per answer token with its p(<rf>); a flag cell where the flag fired."""
    cells = [(piece, round(p, 4)) for piece, p in zip(token_pieces(tokenizer, token_ids), probabilities)]
    if flag.get("fired") and flag.get("step") is not None:
        cells.insert(min(flag["step"], len(cells)), (FLAG_MARK, 1.0))
    return cells


def describe_flag(flag: dict, threshold: float, action: str) -> str:
    if not flag["fired"]:
        return f"✅ No flag: the highest p(`<rf>`) was {flag['probability']:.3f}, below the threshold {threshold:.3g}."
    outcome = {"refuse": "the answer was replaced by a refusal", "stop": "the answer stopped there",
               "flag": "generation went on; the 🚩 marks the spot"}[action]
    return (f"🚩 The flag fired at token {flag['step']} (score {flag['probability']:.3f} ≥ threshold "
            f"{threshold:.3g}): {outcome}.")


def parse_args(argv=None):
    parser = space_parser(__doc__.splitlines()[0])
    parser.add_argument("--red-flag", default=os.environ.get("HF_SENTINEL_SPACE_RED_FLAG", "default"),
                        help="red-flag folder or Hub id; default: the one shipped for the embedded target "
                             "[HF_SENTINEL_SPACE_RED_FLAG]")
    args = parser.parse_args(argv)
    check_settings(args)
    return args


if __name__ == "__main__":
    settings = parse_args()
    launch(build_demo(settings), settings)
