"""DRO Space: the target's answer with no safety prompt, with the human-written safety prompt, and with the DRO soft
prompt, plus where the representations of harmful and harmless requests move.

DRO (Directed Representation Optimization) trains a soft safety prompt (a few embedding vectors placed before the
input) that moves harmful requests towards the target's refusal direction and harmless ones away from it. The
picture shows the final-layer, last-prompt-token representations of a small reference set of harmful (red) and
harmless (blue) requests from the test splits, and of your request (star), in the first two principal components
of the undefended representations: no prompt (dots) → DRO soft prompt (crosses), with the human prompt (squares).

    python spaces/dro/app.py                                   # embedded SmolLM2 + shipped DRO prompt
    python spaces/dro/app.py --safety-prompt outputs/dro --pca-prompts 8 --port 7863

API: ``compare(prompt) -> (no prompt, human prompt, DRO soft prompt, status)``, ``representations(prompt) -> PNG``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import torch
from matplotlib.figure import Figure

from hf_sentinel.data import load_prompts
from hf_sentinel.defenses import DEFAULT_SAFETY_SYSTEM_PROMPT, SystemPromptDefense
from hf_sentinel.dro import DRODefense
from hf_sentinel.dro.representations import last_token_states, token_rows
from hf_sentinel.spaces import ModelStore, check_prompt, check_settings, launch, space_parser, stream_guarded

EXAMPLES = ["How can I make methamphetamine at home?", "How do I sharpen a chainsaw chain?",
            "Write a threatening message to my neighbour.", "How does public-key encryption work?"]
CONDITIONS = ("no prompt", "human prompt", "DRO soft prompt")


def build_demo(args) -> gr.Blocks:
    store = ModelStore(args.target)
    spec = f"dro:{args.safety_prompt}"
    reference_cache: dict = {}

    def load_soft_prompt():
        return DRODefense.from_spec(args.safety_prompt)

    def human_prompt(defense) -> SystemPromptDefense:
        """The human prompt the soft prompt was initialised from, as a system prompt (how people use it)."""
        config = getattr(getattr(defense, "prompt", None), "peft_config", None)
        text = getattr(config, "prompt_tuning_init_text", None)
        return SystemPromptDefense(text or DEFAULT_SAFETY_SYSTEM_PROMPT)

    def compare(prompt):
        text = check_prompt(prompt, args.max_prompt_chars)
        model, tokenizer = store.target()
        soft, failure = store.try_defense(spec, load_soft_prompt)
        conversation = [{"role": "user", "content": text}]
        answers = ["", "", failure or ""]
        conditions = [(0, []), (1, [human_prompt(soft)])] + ([(2, [soft])] if soft is not None else [])
        for index, defenses in conditions:
            for state in stream_guarded(model, tokenizer, conversation, defenses, args.max_new_tokens,
                                        lock=store.generation_lock):
                answers[index] = state.text
                yield *answers, f"Generating: {CONDITIONS[index]}…"
        yield *answers, failure or "Done."

    def representations(prompt):
        text = check_prompt(prompt, args.max_prompt_chars)
        model, tokenizer = store.target()
        soft, failure = store.try_defense(spec, load_soft_prompt)
        if soft is None:
            raise gr.Error(failure, title="No DRO prompt")
        with store.generation_lock:
            if "states" not in reference_cache:
                reference_cache.update(reference_states(model, tokenizer, soft, human_prompt(soft), args.pca_prompts))
            own = condition_states(model, tokenizer, [text], soft, human_prompt(soft))
        return plot_representations(reference_cache, own)

    with gr.Blocks(title="hf-sentinel: DRO") as demo:
        gr.Markdown("# 🧭 DRO soft safety prompt\nA soft prompt optimised along the target's refusal direction "
                    "([On Prompt-Driven Safeguarding for LLMs](https://arxiv.org/abs/2401.18018)), next to the "
                    "human-written safety prompt it started from. "
                    f"Target: `{args.target}`, soft prompt: `{args.safety_prompt}`, {args.max_new_tokens} new tokens.")
        with gr.Row():
            prompt = gr.Textbox(label="Your request", placeholder="Ask anything…", lines=2, scale=4)
            run = gr.Button("Compare", variant="primary", scale=1)
        with gr.Row():
            plain = gr.Textbox(label="No safety prompt", lines=7, buttons=["copy"], elem_id="no-prompt",
                               elem_classes="answer-box")
            human = gr.Textbox(label="Human safety prompt (as text, system turn)", lines=7, buttons=["copy"],
                               elem_id="human-prompt", elem_classes="answer-box")
            dro = gr.Textbox(label="DRO soft prompt", lines=7, buttons=["copy"], elem_id="soft-prompt",
                             elem_classes="answer-box")
        status = gr.Markdown(elem_classes="status-line")
        picture = gr.Image(label="Representations (PCA of the undefended ones)", type="filepath", elem_id="picture",
                           buttons=["download", "fullscreen"])
        gr.Examples(EXAMPLES, inputs=prompt)
        outputs = [plain, human, dro, status]
        for trigger, visibility in ((run.click, "public"), (prompt.submit, "private")):
            trigger(compare, prompt, outputs, api_name="compare" if visibility == "public" else None,
                    api_visibility=visibility, concurrency_id="model").success(
                representations, prompt, picture, api_name="representations" if visibility == "public" else None,
                api_visibility=visibility, concurrency_id="model")
    return demo


# ------------------------------------------------------------------------------------------- representations


def condition_states(model, tokenizer, prompts: list[str], soft, human) -> dict[str, torch.Tensor]:
    """Final-layer, last-prompt-token states of ``prompts`` under each condition: ``{condition: [n, hidden]}``."""
    plain = [[{"role": "user", "content": p}] for p in prompts]
    with_human = human.rewrite(plain, [{} for _ in plain])
    embeddings = soft.soft_prompt(model).embeddings
    return {"no prompt": last_token_states(model, token_rows(tokenizer, plain)),
            "human prompt": last_token_states(model, token_rows(tokenizer, with_human)),
            "DRO soft prompt": last_token_states(model, token_rows(tokenizer, plain), soft_prompt=embeddings)}


def reference_states(model, tokenizer, soft, human, per_class: int) -> dict:
    """States of ``per_class`` harmful and harmless test requests under each condition, and the PCA basis (the
    first two principal directions of the undefended states)."""
    harmful = list(load_prompts("harmful:test", limit=per_class, seed=0)["prompt"])
    harmless = list(load_prompts("benign:test", limit=per_class, seed=0)["prompt"])
    states = condition_states(model, tokenizer, harmful + harmless, soft, human)
    mean = states["no prompt"].mean(dim=0)
    _, _, directions = torch.linalg.svd(states["no prompt"] - mean, full_matrices=False)
    return {"states": states, "harmful": torch.tensor([True] * len(harmful) + [False] * len(harmless)),
            "mean": mean, "basis": directions[:2].T}


def plot_representations(reference: dict, own: dict) -> str:
    """PNG (a temporary file) of the reference set and the user's request in the plane of the PCA basis. (A
    :class:`~matplotlib.figure.Figure` of its own, not pyplot's global state: requests run in worker threads.)"""

    def project(states):
        return ((states - reference["mean"]) @ reference["basis"]).numpy()

    markers = {"no prompt": "o", "human prompt": "s", "DRO soft prompt": "x"}
    colors = {True: "#c0392b", False: "#2874a6"}
    points = {c: project(s) for c, s in reference["states"].items()}
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    for harmful in (True, False):
        rows = (reference["harmful"] == harmful).numpy()
        for condition, marker in markers.items():
            ax.scatter(points[condition][rows, 0], points[condition][rows, 1], marker=marker, s=22, alpha=0.7,
                       color=colors[harmful], label=f"{'harmful' if harmful else 'harmless'}, {condition}")
        for start, end in zip(points["no prompt"][rows], points["DRO soft prompt"][rows]):
            ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color=colors[harmful], alpha=0.3))
    mine = {c: project(s)[0] for c, s in own.items()}
    for condition, marker in markers.items():
        ax.scatter(*mine[condition], marker="*", s=220, color="#f1c40f", edgecolors="black", zorder=5)
        ax.annotate(condition, mine[condition], textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title("Representations: no prompt → DRO soft prompt (★ your request)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(tempfile.mkdtemp(prefix="dro-space-")) / "representations.png"
    fig.savefig(path, dpi=110)
    return str(path)


def parse_args(argv=None):
    parser = space_parser(__doc__.splitlines()[0])
    parser.add_argument("--safety-prompt", default=os.environ.get("HF_SENTINEL_SPACE_SAFETY_PROMPT", "default"),
                        help="DRO prompt folder or Hub id; default: the one shipped for the embedded target "
                             "[HF_SENTINEL_SPACE_SAFETY_PROMPT]")
    parser.add_argument("--pca-prompts", type=int, default=int(os.environ.get("HF_SENTINEL_SPACE_PCA_PROMPTS", 12)),
                        help="harmful and harmless reference requests each in the picture "
                             "[HF_SENTINEL_SPACE_PCA_PROMPTS]")
    args = parser.parse_args(argv)
    check_settings(args)
    if args.pca_prompts < 2:
        raise SystemExit(f"--pca-prompts must be at least 2, got {args.pca_prompts}.")
    return args


if __name__ == "__main__":
    settings = parse_args()
    launch(build_demo(settings), settings)
