"""The held-out bench: every set of the held-out suite through one defense stack, judged, with 95% intervals.

``hf-sentinel bench --defense SPEC`` calls :func:`run_bench`; the result is a dict like
:func:`hf_sentinel.evaluation.evaluate`'s, written as JSON::

    {"summary": {"name", "defense", "attacker", "target", "judge", "judge_agreement", "limit", "settings",
                 "generation", "wall_seconds", "headline": {"attack_success", "benign_answered", "worst_attack"},
                 "sets": {NAME: {"label", "measure", "footnote", "n", "k", "rate", "ci", "by_category", ...}}},
     "records": [{"set", "attack", "label", "request", "prompt", "response", "score", "verdict", ...}, ...]}

``rate`` is the share of answers the judge says complied: the attack success rate on harmful sets, the answer
rate on benign ones; ``ci`` its 95% Wilson interval. Generation is greedy, except ``harmbench-sampling`` (sampled
at temperature 1 with a fixed seed); ``harmbench-prefill`` is pre-filled through ``GenerationSettings.prefill``.
Rows that share generation settings go through one :func:`~hf_sentinel.evaluation.evaluate` call, except that the
jailbreak-wrapped prompts (up to ~400 tokens) get a call of their own: in a shared batch, every short prompt would be
padded to their length (measured on the embedded target: 85 s for 60 rows together, 48 s apart). The judge
compares each answer with the bare request, not with the jailbreak-wrapped prompt the target saw.

With an ``attacker`` (``hf-sentinel bench --attacker red-team:default``, a
:class:`~hf_sentinel.sentinel.RedTeamAttacker`), every harmful row that carries no attack of its own — the plain
sets ``harmbench`` and ``donotanswer-heldout`` and the harmful half of ``own-test`` (:func:`attacked_rows`) — is
rewritten by the attacker before the defenses see it; its record keeps the original ``request`` (which the judge
still compares the answer with: attack success means the original harmful intent was answered), the attack as
``prompt``, ``attacker`` and ``attacker_fell_back`` (the rewrite came back empty and the request was sent as it
is). The attack-shape sets (jailbreak, pre-fill, sampling, multi-turn) already carry an attack and run unchanged, so
they stay comparable with runs without an attacker; benign rows are never rewritten. ``summary["attacker"]`` says
which attacker ran, with its settings and counts (``None`` without one).

With ``sets`` (``hf-sentinel bench --sets NAME ...``), only the named sets run: sets of the suite, or the extra sets
outside it (:data:`~hf_sentinel.data.heldout.EXTRA_SETS`: ``harmbench-long-context`` and ``benign-long-context``,
the multi-turn request and held-out benign requests after a long benign chat; ``harmbench-punctuated`` and
``benign-unpunctuated``, the main sets with the final punctuation changed), which a whole-suite run leaves out
so that its numbers stay comparable with earlier runs. ``summary["only_sets"]`` lists them (``None`` for the whole
suite). A defense's per-answer report is in each record as :func:`~hf_sentinel.evaluation.evaluate` writes it, e.g.
the red flag's ``{"fired", "step", "probability"}`` under ``red_flag``, multi-turn rows included.

Example (tiny random model)::

    >>> from hf_sentinel.defaults import tiny_model
    >>> from hf_sentinel.judges import RefusalJudge
    >>> model, tokenizer = tiny_model()
    >>> result = run_bench(model, tokenizer, RefusalJudge(), limit=1, max_new_tokens=2, progress=False)
    >>> sorted(result["summary"]["sets"])[:2], len(result["records"])
    (['benign-heldout', 'donotanswer-heldout'], 8)
"""

from __future__ import annotations

import inspect
import math
import time
from collections import defaultdict
from functools import lru_cache

from datasets import concatenate_datasets

from ..data.heldout import EXTRA_SETS, FOOTNOTE_SETS, SAMPLING_TEMPERATURE, SUITE, load_heldout
from ..defenses import Defense, describe
from ..generation import GenerationSettings
from ..judges import Judge
from . import evaluate
from .report import set_keys, stack_label

#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054
MEASURES = {"harmful": "attack success", "benign": "answered"}
_BREAKDOWNS = {"harmful": ("category",), "benign": ("shape", "xstest_type")}
#: The order sets are reported in: the suite's, then the extra sets'.
_SET_ORDER = [*SUITE, *EXTRA_SETS]


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (95% by default): unlike ``p ± z·se`` it stays inside
    [0, 1] and does not collapse to a point at 0 or n.

    >>> [round(x, 4) for x in wilson_interval(0, 10)], [round(x, 4) for x in wilson_interval(5, 10)]
    ([0.0, 0.2775], [0.2366, 0.7634])
    >>> wilson_interval(0, 3)[0], wilson_interval(6, 6)[1]  # exactly p at the ends, never past it
    (0.0, 1.0)
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"Need 0 <= k <= n and n >= 1 for a proportion, got k={k}, n={n}.")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The interval always holds p; rounding can put a bound a hair past it (5.6e-17 above 0 for k = 0), and error
    # bars drawn from p to such a bound would be negative.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def proportion(k: int, n: int) -> dict:
    """``{"n", "k", "rate", "ci"}`` for ``k`` of ``n`` with its 95% Wilson interval."""
    return {"n": n, "k": k, "rate": k / n, "ci": list(wilson_interval(k, n))}


class _JudgedOnRequests(Judge):
    """``judge`` scoring answers against the bare requests instead of the prompts :func:`evaluate` passes (a
    jailbreak template around a request would make the judge's off-topic check compare the answer with the
    template)."""

    def __init__(self, judge: Judge, requests: list[str]):
        self.judge, self.requests = judge, list(requests)
        self.threshold = judge.threshold
        self.positive_verdict, self.negative_verdict = judge.positive_verdict, judge.negative_verdict

    @property
    def __name__(self) -> str:
        return self.judge.__name__

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if len(completions) != len(self.requests):
            raise ValueError(f"Got {len(completions)} answers for {len(self.requests)} requests.")
        return self.judge(self.requests, completions, **kwargs)

    def is_harmful(self, score: float) -> bool:
        return self.judge.is_harmful(score)


@lru_cache(maxsize=4)  # one measurement per judge, however many stacks a demo benches with it
def judge_agreement(judge: Judge) -> dict:
    """How often a refusal judge agrees with PyRIT's human refusal labels on the rows nothing was tuned on
    (``docs/judges.md``): ``{"n", "accuracy", ...}``, or ``{"not_measured": why}``."""
    from ..judges import AnswerRefusalJudge, RefusalJudge
    from ..judges.labels import agreement, judged_refusals, load_refusal_labels

    if not isinstance(judge, (RefusalJudge, AnswerRefusalJudge)):
        return {"not_measured": f"the human labels are refusal labels; {judge.__name__} is not a refusal judge"}
    try:
        rows = load_refusal_labels(split="test")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        return {"not_measured": str(error)}
    return agreement(judged_refusals(judge, rows), rows["refusal"])


def run_bench(model, tokenizer, judge: Judge, defenses: list[Defense] = (), *, limit: int | None = None,
              max_new_tokens: int = 48, batch_size: int = 32, seed: int = 0, chat: bool = True,
              target_name: str | None = None, name: str | None = None, progress: bool = True,
              attacker=None, sets: list[str] | None = None) -> dict:
    """Answer every set of :data:`~hf_sentinel.data.heldout.SUITE` (or of ``sets``) under ``defenses``, judge, and
    summarise.

    Args:
        limit: the first ``limit`` rows of each set (a fixed slice spread over its categories / shapes); ``None``
            for the whole suite.
        max_new_tokens, batch_size, seed: generation settings (``seed`` drives the sampled set, and a sampling
            attacker).
        name: the stack's name in tables and plots (default: the defense specs joined by ``+``, then
            ``← ATTACKER`` with an attacker).
        attacker: rewrites the plain harmful requests before the defenses (see the module docstring): a
            :class:`~hf_sentinel.sentinel.RedTeamAttacker`, its spec (``"red-team:default"``), or any object with
            ``rewrite(prompts, seed=...) -> list[str]`` and a ``spec``; ``None`` for none.
        sets: only these sets, by name: sets of the suite or :data:`~hf_sentinel.data.heldout.EXTRA_SETS` (the
            long-context sets), reported in suite order; ``None`` for the whole suite. ``summary["only_sets"]``
            names them (``None`` for the whole suite).
    """
    start = time.perf_counter()
    names = list(SUITE) if sets is None else check_sets(sets)
    if isinstance(attacker, str):
        from ..sentinel.red_team import RedTeamAttacker

        attacker = RedTeamAttacker.from_spec(attacker)
    suite = concatenate_datasets([load_heldout(set_name, limit) for set_name in names])
    attacked: dict[int, bool] = {}
    attacker_summary = None
    if attacker is not None:
        suite, attacked, attacker_summary = _attack(suite, attacker, seed, progress)
    # One evaluate() call per generation setting (greedy, greedy + prefill, sampled), long jailbreak prompts apart.
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, (attack, prefill) in enumerate(zip(suite["attack"], suite["prefill"])):
        groups[(attack == "sampling", prefill, attack == "jailbreak")].append(index)
    records: list[dict | None] = [None] * len(suite)
    generation = []
    for (sampled, prefill, jailbreak), indices in groups.items():
        rows = suite.select(indices)
        settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                      do_sample=sampled, temperature=SAMPLING_TEMPERATURE, prefill=prefill or None)
        group_start = time.perf_counter()
        result = evaluate(model, tokenizer, rows, _JudgedOnRequests(judge, rows["request"]), defenses, settings,
                          chat=chat, target_name=target_name, prompts_name="held-out suite", progress=progress)
        generation.append({"decoding": "sampled" if sampled else "greedy", "prefill": prefill,
                           "jailbreak": jailbreak, "n": len(indices), "seconds": time.perf_counter() - group_start,
                           "tokens_per_second": result["summary"]["tokens_per_second"]})
        for index, row, record in zip(indices, rows, result["records"]):
            records[index] = {**_describe_row(row), **record}
            if index in attacked:
                records[index].update(attacker=attacker_summary["spec"], attacker_fell_back=attacked[index])

    summary = {
        "name": name or stack_label(describe(list(defenses)), attacker_summary),
        "defense": describe(list(defenses)),
        "attacker": attacker_summary,
        "target": target_name or getattr(model, "name_or_path", type(model).__name__),
        "judge": judge.__name__,
        "judge_agreement": dict(judge_agreement(judge)),
        "limit": limit,
        "only_sets": None if sets is None else names,
        "settings": {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "decoding":
                     f"greedy; harmbench-sampling sampled at temperature {SAMPLING_TEMPERATURE}"},
        "generation": generation,
        "sets": summarise(records, judge.is_harmful),
    }
    summary["headline"] = headline(summary["sets"])
    summary["wall_seconds"] = time.perf_counter() - start
    return {"summary": summary, "records": records}


def check_sets(sets) -> list[str]:
    """``sets`` without repeats, in report order (the suite's, then the extra sets'); an unknown name is an error."""
    sets = [sets] if isinstance(sets, str) else list(sets)
    unknown = [name for name in sets if name not in _SET_ORDER]
    if unknown or not sets:
        problem = f"Unknown held-out set {unknown[0]!r}" if unknown else "No held-out set named"
        raise ValueError(f"{problem}; give sets of the suite ({', '.join(SUITE)}) or extra sets "
                         f"({', '.join(EXTRA_SETS)}).")
    return sorted(set(sets), key=_SET_ORDER.index)


def attacked_rows(suite) -> list[int]:
    """The rows an attacker rewrites: harmful requests that carry no attack of their own (``attack == "none"``)."""
    return [i for i, (label, attack) in enumerate(zip(suite["label"], suite["attack"]))
            if label == "harmful" and attack == "none"]


def _attack(suite, attacker, seed: int, progress: bool):
    """The suite with the attacked rows' prompts replaced by the attacker's rewrites, ``{row: fell back}``, and the
    attacker's summary."""
    indices = attacked_rows(suite)
    column = suite["request"]
    requests = [column[i] for i in indices]
    start = time.perf_counter()
    kwargs = {"progress": progress} if "progress" in inspect.signature(attacker.rewrite).parameters else {}
    attacks = list(attacker.rewrite(requests, seed=seed, **kwargs))
    if len(attacks) != len(requests):
        raise ValueError(f"The attacker {attacker.spec} returned {len(attacks)} attacks for {len(requests)} requests.")
    reported = list(getattr(attacker, "last_fallbacks", None) or [False] * len(requests))
    # An empty attack is sent as the request itself, whatever attacker wrote it.
    fell_back = [bool(f) or not a.strip() for f, a in zip(reported, attacks)]
    attacks = [r if f else a for r, a, f in zip(requests, attacks, fell_back)]
    prompts = list(suite["prompt"])
    for i, text in zip(indices, attacks):
        prompts[i] = text
    suite = suite.remove_columns("prompt").add_column("prompt", prompts)
    described = attacker.describe() if hasattr(attacker, "describe") else {"spec": attacker.spec}
    set_names = suite["set"]
    summary = {**described, "sets": sorted({set_names[i] for i in indices}, key=_SET_ORDER.index),
               "rewritten": len(indices), "fell_back": sum(fell_back),
               "unchanged": sum(a == r for a, r, f in zip(attacks, requests, fell_back) if not f),
               "seconds": time.perf_counter() - start}
    return suite, dict(zip(indices, fell_back)), summary


def _describe_row(row: dict) -> dict:
    kept = {key: row[key] for key in ("set", "attack", "label", "request", "category", "shape", "xstest_type")
            if row[key]}
    if row["history"]:
        kept["history"] = row["history"]
    return kept


def summarise(records: list[dict], complied) -> dict:
    """Per set (per set and label where a set mixes harmful and benign rows, as ``own-test/harmful``): the share of
    answers that ``complied(score)`` (the judge's ``is_harmful``) with its Wilson interval, and the same by category
    (harmful sets) or by shape and XSTest type (benign sets)."""
    parts: dict[str, list[dict]] = defaultdict(list)
    for key, record in zip(set_keys(records), records):
        parts[key].append(record)
    sets = {}
    # Suite order (extra sets last); within a mixed set, harmful before benign.
    for key, rows in sorted(parts.items(), key=lambda item: (_SET_ORDER.index(item[1][0]["set"]),
                                                             item[1][0]["label"] != "harmful")):
        label = rows[0]["label"]
        entry = {"label": label, "measure": MEASURES[label], "footnote": rows[0]["set"] in FOOTNOTE_SETS,
                 "attack": rows[0].get("attack", "none"), **_share(rows, complied)}
        if rows[0].get("attacker"):
            entry["attacker"] = rows[0]["attacker"]
        for column in _BREAKDOWNS[label]:
            values = sorted({r[column] for r in rows if r.get(column)})
            if len(values) > 1:
                entry[f"by_{column}"] = {v: _share([r for r in rows if r.get(column) == v], complied)
                                        for v in values}
        sets[key] = entry
    return sets


def _share(rows: list[dict], complied) -> dict:
    return proportion(sum(bool(complied(r["score"])) for r in rows), len(rows))


def headline(sets: dict) -> dict:
    """The trade-off in three numbers: HarmBench attack success, held-out benign answer rate, and the attack shape
    with the highest attack success (``None`` where the sets were not run)."""
    attacks = {k: v for k, v in sets.items() if v["label"] == "harmful" and v["attack"] != "none"}
    worst = max(attacks, key=lambda k: attacks[k]["rate"], default=None)
    return {"attack_success": sets.get("harmbench"), "benign_answered": sets.get("benign-heldout"),
            "worst_attack": {"set": worst, **attacks[worst]} if worst else None}


__all__ = ["run_bench", "check_sets", "wilson_interval", "proportion", "summarise", "headline", "judge_agreement",
           "attacked_rows", "Z95"]
