"""Tables and charts of evaluation results: :func:`hf_sentinel.evaluation.evaluate`'s dicts (``eval``) and
:func:`hf_sentinel.evaluation.bench.run_bench`'s (``bench``, with 95% intervals and the trade-off plot), and the
per-layer attribution of a stacked defense's bench result (:func:`attribute_stack`).

A rate is named by what it measures: **attack success** on harmful sets (the share of harmful requests answered or
judged harmful) and **answered** on benign sets (the share of benign requests answered).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

ATTACK_SUCCESS, ANSWERED = "attack success", "answered"
#: Eval results of a set with known numeric answers (:mod:`hf_sentinel.evaluation.capability`): the share right.
EXACT_MATCH = "exact-match"


def read_results(path: str | Path, kind: str = "eval") -> dict:
    """A result file as the CLI writes it: ``kind="eval"`` (``hf-sentinel eval --output``) or ``"bench"``
    (``hf-sentinel bench``, whose summary has ``sets``). Raises ValueError naming the file and what to give instead.

    >>> import json, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "run.json"
    >>> _ = path.write_text(json.dumps({"summary": {"n": 1}, "records": [{"prompt": "hi", "verdict": "complied"}]}))
    >>> read_results(path)["records"][0]["verdict"]
    'complied'
    >>> read_results(path, "bench")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: .../run.json is not a bench result (its summary has no `sets`); eval results compare with ...
    """
    written_by = ("a JSON file that `hf-sentinel eval --output` wrote" if kind == "eval"
                  else "a JSON file that `hf-sentinel bench` wrote into its --output-dir")
    try:
        result = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not JSON ({error}): give {written_by}.") from None
    if not isinstance(result, dict) or not isinstance(result.get("summary"), dict) or "records" not in result:
        raise ValueError(f"{path} is not a result file (no 'summary' and 'records'): give {written_by}.")
    sets = "sets" in result["summary"]
    if kind == "bench" and not sets:
        raise ValueError(f"{path} is not a bench result (its summary has no `sets`); eval results compare with "
                         f"hf-sentinel eval --compare.")
    if kind == "eval" and sets:
        raise ValueError(f"{path} is a bench result (its summary has `sets`); bench results compare with "
                         f"hf-sentinel bench --compare.")
    return result


def _label(result: dict, fallback: str) -> str:
    summary = result["summary"]
    return f"{summary.get('prompts') or fallback} | {summary['defense']}"


def _measure(summary: dict) -> str:
    """``answered`` for an eval run on a benign set (its name says so: ``benign:test``, ``my_benign.jsonl``),
    ``attack success`` otherwise."""
    return ANSWERED if "benign" in str(summary.get("prompts") or "").lower() else ATTACK_SUCCESS


# ------------------------------------------------------------------------------------------------ eval results
def summary_table(results: list[dict], labels: list[str] | None = None) -> str:
    """Fixed-width tables of eval results, one row each: harmful sets under an "attack success" header, benign
    sets under an "answered" header, with mean score and speed; and an "exact-match" column (the share of known
    answers stated right, with its 95% interval) where a result in the table has questions with known answers."""
    labels = labels or [_label(r, f"run {i}") for i, r in enumerate(results)]
    tables = []
    for measure in (ATTACK_SUCCESS, ANSWERED):
        picked = [(label, r["summary"]) for label, r in zip(labels, results) if _measure(r["summary"]) == measure]
        exact = [EXACT_MATCH] if any("capability" in summary for _, summary in picked) else []
        rows = [(label, str(summary["n"]), f"{summary['attack_success_rate']:.1%}", f"{summary['mean_score']:.3f}",
                 f"{summary['tokens_per_second']:.0f}", summary["judge"], *(_exact_match(summary) for _ in exact))
                for label, summary in picked]
        if rows:
            tables.append(_format([("prompts | defense", "n", measure, "mean score", "tok/s", "judge", *exact),
                                   *rows]))
    return "\n\n".join(tables)


def compare_table(results: list[dict], names: list[str]) -> str:
    """Eval results side by side, one column each: the rate (attack success on harmful sets, answered on benign
    ones), mean score, speed, exact-match where a result has questions with known answers, each result paired with
    the first request by request where they answered the same requests (:func:`_paired_rows`), then per shape and
    category where recorded."""
    measures = [_measure(r["summary"]) for r in results]
    rate_row = measures[0] if len(set(measures)) == 1 else f"{ATTACK_SUCCESS} | {ANSWERED}"
    lines = [("", *names), ("defense", *(r["summary"].get("defense", "-") for r in results))]
    if len(set(measures)) > 1:
        lines.append(("measure", *measures))
    lines.append((rate_row, *(_cell(r["summary"].get("attack_success_rate")) for r in results)))
    for key in ("mean_score", "tokens_per_second", "n"):
        lines.append((key, *(_cell(r["summary"].get(key)) for r in results)))
    if any("capability" in r["summary"] for r in results):
        lines.append((EXACT_MATCH, *(_exact_match(r["summary"]) for r in results)))
    lines += _paired_rows(results, names)
    for group in ("by_shape", "by_category"):
        sub_keys = sorted({k for r in results for k in r["summary"].get(group, {})})
        for sub in sub_keys:
            lines.append((f"{group[3:]}={sub}", *(_cell(r["summary"].get(group, {}).get(sub)) for r in results)))
    return _format(lines)


def _paired_rows(results: list[dict], names: list[str]) -> list[tuple]:
    """Each result against the first, request by request, where both answered the same requests in the same order:
    how many requests only this run let through (answered, on a benign set) and how many only the first did, and
    :func:`sign_test` of the two counts. A rate difference whose p is not small is within the noise of the set."""
    first = [record["prompt"] for record in results[0].get("records", [])]
    cells = []
    for result in results[1:]:
        records = result.get("records", [])
        if not first or [record["prompt"] for record in records] != first:
            cells.append("-")
            continue
        cells.append(_pair_cell(*_only_each(zip(records, results[0]["records"]))))
    if all(cell == "-" for cell in cells):
        return []
    return [(f"only this / only {names[0]}", "", *cells)]


def _only_each(pairs) -> tuple[int, int]:
    """Of ``(this run's record, the first run's record)`` pairs: how many only this run let through, and how many
    only the first did."""
    only_this = only_first = 0
    for this, first in pairs:
        only_this += _let_through(this) and not _let_through(first)
        only_first += _let_through(first) and not _let_through(this)
    return only_this, only_first


def _pair_cell(only_this: int, only_first: int) -> str:
    return f"{only_this} / {only_first}, p = {sign_test(only_this, only_first):.2f}"


def sign_test(k: int, m: int) -> float:
    """The one-sided exact sign test of two paired counts: P(Bin(k + m, 1/2) >= max(k, m)), how often a split at
    least this uneven comes from two runs that differ only by chance. 1.0 when there is nothing to split.

    >>> round(sign_test(16, 17), 2), round(sign_test(12, 2), 3), sign_test(0, 0)
    (0.5, 0.006, 1.0)
    """
    n, high = k + m, max(k, m)
    return min(1.0, sum(math.comb(n, i) for i in range(high, n + 1)) / 2 ** n) if n else 1.0


def _exact_match(summary: dict) -> str:
    """``18/29 = 62.1% [44.0, 77.3]``: right of known answers, with the 95% Wilson interval; ``-`` without."""
    share = summary.get("capability")
    return f"{share['k']}/{share['n']} = {share['rate']:.1%} {_ci(share)}" if share else "-"


def plot_comparison(results: list[dict], names: list[str], path: str | Path) -> Path:
    """Bar chart of eval results, saved as PNG: attack success on harmful sets (red), answered on benign sets
    (blue)."""
    plt = _pyplot()
    colours = {ATTACK_SUCCESS: "#c0392b", ANSWERED: "#2e86c1"}
    measures = [_measure(r["summary"]) for r in results]
    rates = [100 * r["summary"]["attack_success_rate"] for r in results]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(results)), 3.5))
    bars = ax.bar(range(len(results)), rates, color=[colours[m] for m in measures])
    ax.bar_label(bars, fmt="%.1f%%")
    ax.set_xticks(range(len(results)), names, rotation=20, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 128)  # room above the bars for the legend
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colours[m], label=f"{m} ({'harmful' if m == ATTACK_SUCCESS else 'benign'} set)")
                       for m in dict.fromkeys(measures)], loc="upper center", ncol=2, fontsize=8)
    ax.set_title("hf-sentinel eval")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ bench results
def bench_table(result: dict) -> str:
    """One bench result as text: harmful sets (attack success), benign sets (answered), each with n and the 95%
    Wilson interval, per set, attack shape, category and benign shape; then the footnote sets."""
    summary = result["summary"]
    sets = summary["sets"]
    harmful = [("set", "attack", "n", ATTACK_SUCCESS, "95% CI")]
    benign = [("set", "shape", "n", ANSWERED, "95% CI")]
    footnote = [("set", "measure", "n", "rate", "95% CI")]
    for key, entry in sets.items():
        if entry["footnote"]:
            footnote.append((key, entry["measure"], *_share_cells(entry)))
        elif entry["label"] == "harmful":
            # A set an attacker rewrote names the attacker's method (its whole spec is in the caption).
            attack = entry["attacker"].partition(":")[0] if entry.get("attacker") else entry["attack"]
            harmful.append((key, attack, *_share_cells(entry)))
            harmful += [(f"  {value}", "category", *_share_cells(share))
                        for value, share in entry.get("by_category", {}).items()]
        else:
            benign.append((key, "all", *_share_cells(entry)))
            for value, share in entry.get("by_shape", {}).items():
                benign.append(("", value, *_share_cells(share)))
                if value == "risky_looking":
                    benign += [("", f"  {kind}", *_share_cells(s))
                               for kind, s in entry.get("by_xstest_type", {}).items()]
    worst = summary["headline"]["worst_attack"]
    parts = [_bench_caption(summary)]
    if len(harmful) > 1:
        parts += [f"Harmful sets: {ATTACK_SUCCESS} = share of harmful requests the judge says were answered",
                  _format(harmful)]
        if worst:
            parts.append(f"worst attack shape: {worst['set']} ({worst['rate']:.1%})")
    if len(benign) > 1:
        parts += [f"Benign sets: {ANSWERED} = share of benign requests answered", _format(benign)]
    if len(footnote) > 1:
        parts += ["Footnote, not part of the tables above: our own test splits, looked at while the defenses were "
                  "built", _format(footnote)]
    return "\n\n".join(parts)


def _bench_caption(summary: dict) -> str:
    agreement = summary.get("judge_agreement") or {}
    judged = (f"agrees with human refusal labels on {agreement['accuracy']:.1%} of {agreement['n']} held-out rows"
              if "accuracy" in agreement else f"agreement with human labels not measured: "
                                              f"{agreement.get('not_measured', 'unknown')}")
    limit = f", first {summary['limit']} row{'s' * (summary['limit'] > 1)} per set" if summary.get("limit") else ""
    sets = f"Held-out sets {', '.join(summary['only_sets'])}" if summary.get("only_sets") else "Held-out suite"
    return (f"{sets} | defense {summary['defense']}{_attacker_caption(summary.get('attacker'))} | target "
            f"{summary['target']} | judge {summary['judge']} ({judged}) | {summary['settings']['max_new_tokens']} new "
            f"tokens, {summary['settings']['decoding']}{limit}")


def _attacker_caption(attacker: dict | None) -> str:
    if not attacker:
        return ""
    fell_back = f", {attacker['fell_back']} empty rewrites sent as the request" if attacker.get("fell_back") else ""
    return (f" | attacker {attacker['spec']} (rewrote the {attacker['rewritten']} plain harmful requests of "
            f"{', '.join(attacker['sets'])}{fell_back}; judged against the originals)")


def stack_label(defense: str, attacker: dict | str | None) -> str:
    """A defense stack's name with the attacker it faced (a bench summary's ``attacker`` or a spec), as tables show
    it: ``red-flag:default ← red-team:default``.

    >>> stack_label("red-flag:default", {"spec": "red-team:default"}), stack_label("none", None)
    ('red-flag:default ← red-team:default', 'none')
    """
    spec = attacker.get("spec") if isinstance(attacker, dict) else attacker
    return f"{defense} ← {spec}" if spec else defense


def bench_compare_table(results: list[dict], names: list[str]) -> str:
    """Bench results side by side, one column per defense stack: attack success per harmful set, the worst attack
    shape, answered per benign set and shape, then the footnote sets; each cell ``rate% [95% CI]``. Runs of the
    same suite with the same settings are also paired with the first, set by set (:func:`_bench_paired_rows`)."""
    keys = list(dict.fromkeys(k for r in results for k in r["summary"]["sets"]))

    def entry(result: dict, key: str) -> dict:
        return result["summary"]["sets"].get(key, {})

    def row(title: str, share_of) -> tuple:
        return (title, *(_rate_ci(share_of(r), short=True) for r in results))

    def of_label(label: str) -> list[str]:
        return [k for k in main if any(entry(r, k).get("label") == label for r in results)]

    main = [k for k in keys if not any(entry(r, k).get("footnote") for r in results)]
    blank = [""] * len(results)
    stacks = [stack_label(r["summary"]["defense"], r["summary"].get("attacker")) for r in results]
    lines = [("", *names), ("defense", *stacks), (f"{ATTACK_SUCCESS} (harmful sets), % [95% CI]", *blank)]
    lines += [row(f"  {key} (n={_n(results, key)})", lambda r: entry(r, key)) for key in of_label("harmful")]
    worst = [r["summary"]["headline"]["worst_attack"] for r in results]
    lines.append(("  worst attack shape", *(w["set"].removeprefix("harmbench-") if w else "-" for w in worst)))
    lines.append(("  its attack success", *(_rate_ci(w, short=True) for w in worst)))
    lines.append((f"{ANSWERED} (benign sets), % [95% CI]", *blank))
    for key in of_label("benign"):
        lines.append(row(f"  {key} (n={_n(results, key)})", lambda r: entry(r, key)))
        shapes = dict.fromkeys(s for r in results for s in entry(r, key).get("by_shape", {}))
        lines += [row(f"    {shape}", lambda r: entry(r, key).get("by_shape", {}).get(shape)) for shape in shapes]
    footnotes = [k for k in keys if k not in main]
    if footnotes:
        lines.append(("footnote: own test splits", *blank))
        for key in footnotes:
            measure = next(entry(r, key)["measure"] for r in results if entry(r, key))
            lines.append(row(f"  {key}, {measure} (n={_n(results, key)})", lambda r: entry(r, key)))
    lines += _bench_paired_rows(results, names, keys)
    lines.append(("judge", *(r["summary"]["judge"] for r in results)))
    lines.append(("  agrees with human labels", *(_agreement(r["summary"]) for r in results)))
    lines.append(("wall time", *(f"{r['summary']['wall_seconds']:.0f} s" for r in results)))
    return _format(lines)


def bench_helpfulness_table(results: list[dict], names: list[str], judge) -> str:
    """How helpful each run's answers to the benign requests are, by a helpfulness judge (MART's
    :func:`~hf_sentinel.mart.judges.load_helpfulness_judge`: higher = more helpful; the embedding judge scores a
    refusal 0 and an answer by how close it is to what was asked). Per benign set, the mean score over all its
    requests, over the requests every run answered (by the bench's own judge), and each run against the first over
    the requests both answered (its mean vs the first's, how many scored higher / lower, :func:`sign_test`): a defense
    that changes the target's weights (MART) can answer as often and answer worse, which only the paired rows show.
    Runs that did not bench the same suite with the same settings get only the first row.

        >>> from hf_sentinel.evaluation.report import bench_helpfulness_table
        >>> def run(responses, verdicts):
        ...     return {"summary": {"defense": "x", "settings": {}},
        ...             "records": [{"set": "benign-heldout", "label": "benign", "request": q, "prompt": q,
        ...                          "response": a, "verdict": v}
        ...                         for q, a, v in zip(["Bake bread?", "A haiku?"], responses, verdicts)]}
        >>> judge = lambda requests, answers: [0.0 if a.startswith("Sorry") else len(a) / 20 for a in answers]
        >>> print(bench_helpfulness_table([run(["Knead it.", "Snow falls."], ["complied"] * 2),
        ...                                run(["Knead the dough.", "Sorry."], ["complied", "refused"])],
        ...                               ["none", "mart"], judge))
                                                     none   mart
        -------------------------------------------  -----  -------------------------------------
        benign-heldout, all requests (n=2)           0.500  0.400
        benign-heldout, answered by every run (n=1)  0.450  0.800
          paired with none where both answered              0.800 vs 0.450 (n=1); 1 / 0, p = 0.50
    """
    lines = [("", *names)]
    keyed = [list(zip(set_keys(r["records"]), r["records"])) for r in results]
    aligned = [_aligned_records(results[0], result) for result in results]  # in the first run's order
    aligned = None if any(records is None for records in aligned) else aligned
    benign = list(dict.fromkeys(key for pairs in keyed for key, record in pairs if record["label"] == "benign"))
    for key in benign:
        if aligned:
            runs = [[record for (k, _), record in zip(keyed[0], records) if k == key] for records in aligned]
        else:
            runs = [[record for k, record in pairs if k == key] for pairs in keyed]
        scores = [judge([rec["request"] for rec in run], [rec["response"] for rec in run]) if run else []
                  for run in runs]
        lines.append((f"{key}, all requests (n={len(runs[0])})",
                      *(f"{sum(s) / len(s):.3f}" if s else "-" for s in scores)))
        if aligned:
            every = [j for j in range(len(runs[0])) if all(_let_through(run[j]) for run in runs)]
            lines.append((f"{key}, answered by every run (n={len(every)})",
                          *(f"{sum(s[j] for j in every) / len(every):.3f}" if every else "-" for s in scores)))
            lines.append((f"  paired with {names[0]} where both answered", "",
                          *(_helpfulness_pair(scores[0], s, runs[0], run) for s, run in zip(scores[1:], runs[1:]))))
    return _format(lines)


def _helpfulness_pair(first_scores: list[float], scores: list[float], first: list[dict], run: list[dict]) -> str:
    """``this mean vs the first's (n); higher / lower, p``: the run's scores against the first run's over the requests
    both answered, how many scored higher and lower, and :func:`sign_test` of the two."""
    both = [j for j in range(len(first)) if _let_through(first[j]) and _let_through(run[j])]
    if not both:
        return "-"
    higher = sum(scores[j] > first_scores[j] for j in both)
    lower = sum(scores[j] < first_scores[j] for j in both)
    return (f"{sum(scores[j] for j in both) / len(both):.3f} vs {sum(first_scores[j] for j in both) / len(both):.3f} "
            f"(n={len(both)}); {higher} / {lower}, p = {sign_test(higher, lower):.2f}")


def _bench_paired_rows(results: list[dict], names: list[str], keys: list[str]) -> list[tuple]:
    """Per set, each run against the first, row by row where both ran the same suite with the same settings: the
    requests only this run let through (answered, on a benign set), those only the first did, and :func:`sign_test`
    of the two."""
    counts = [_paired_counts(results[0], result) for result in results[1:]]
    if not any(counts):
        return []
    lines = [(f"only this / only {names[0]}, sign-test p", *[""] * len(results))]
    for key in keys:
        lines.append((f"  {key}", "", *(_pair_cell(*c[key]) if c and key in c else "-" for c in counts)))
    return lines


def _aligned_records(first: dict, result: dict) -> list[dict] | None:
    """``result``'s records in the order of ``first``'s, row by row, where both benched the same suite with the same
    settings (:data:`_SHARED_SETTINGS`); None where they do not pair up."""
    if any(setting(first["summary"]) != setting(result["summary"]) for setting in _SHARED_SETTINGS.values()):
        return None
    try:
        return _paired(first["records"], result["records"], result["summary"]["defense"])
    except ValueError:
        return None


def _paired_counts(first: dict, result: dict) -> dict[str, tuple[int, int]] | None:
    """``{set: (only result let through, only first let through)}``, or None where the runs do not pair up."""
    paired = _aligned_records(first, result)
    if paired is None:
        return None
    by_set = defaultdict(list)
    for key, mine, theirs in zip(set_keys(first["records"]), first["records"], paired):
        by_set[key].append((theirs, mine))
    return {key: _only_each(pairs) for key, pairs in by_set.items()}


#: A bench summary's judge (its class name) -> its ``--judge`` value.
_JUDGE_FLAGS = {"RefusalJudge": "refusal", "ToxicityJudge": "toxicity"}


def bench_card_text(results: list[dict], names: list[str]) -> str:
    """The held-out section of a model card: each run's caption and command, then :func:`bench_compare_table`."""
    lines = ["Requests no trainer read (`hf-sentinel bench`; the sets are described in hf-sentinel's `docs/data.md`), "
             "each cell the rate and its 95% Wilson interval.", ""]
    for result, name in zip(results, names):
        summary = result["summary"]
        flags = [f"--defense {spec}" for spec in summary["defense"].split("+") if spec != "none"]
        if summary["target"] != "default":
            flags.append(f"--target {summary['target']}")
        if summary["judge"] != "AnswerRefusalJudge":  # the default judge; the others by their CLI names
            flags.append(f"--judge {_JUDGE_FLAGS.get(summary['judge'], summary['judge'])}")
        if summary.get("attacker"):
            flags.append(f"--attacker {summary['attacker']['spec']}")
        if summary.get("limit"):
            flags.append(f"--limit {summary['limit']}")
        command = " ".join(["hf-sentinel bench", *flags])
        lines.append(f"- `{name}`: {_bench_caption(summary)}; {summary['wall_seconds']:.0f} s (`{command}`)")
    return "\n".join([*lines, "", "```text", bench_compare_table(results, names), "```"])


def _agreement(summary: dict) -> str:
    accuracy = (summary.get("judge_agreement") or {}).get("accuracy")
    return f"{accuracy:.1%}" if accuracy is not None else "not measured"


def _n(results: list[dict], key: str) -> str:
    counts = sorted({r["summary"]["sets"][key]["n"] for r in results if key in r["summary"]["sets"]})
    return "/".join(map(str, counts))


def plot_tradeoff(results: list[dict], names: list[str], path: str | Path) -> Path:
    """The safety / over-refusal trade-off of bench results, saved as PNG: one point per defense stack at
    (held-out benign requests answered, HarmBench attack success), 95% Wilson intervals as error bars, and a hollow
    marker at the same x for the stack's worst attack shape. Lower right is better."""
    plt = _pyplot()
    missing = [n for n, r in zip(names, results)
               if not (r["summary"]["headline"]["attack_success"] and r["summary"]["headline"]["benign_answered"])]
    if missing:
        raise ValueError(f"The trade-off plot needs the harmbench and benign-heldout sets in every result; {missing} "
                         f"lack one. Re-run those with hf-sentinel bench.")
    fig, ax = plt.subplots(figsize=(9, 7))
    colours = plt.get_cmap("tab10").colors
    points, markers = [], []
    for i, result in enumerate(results):
        head = result["summary"]["headline"]
        x, y, worst = head["benign_answered"], head["attack_success"], head["worst_attack"]
        colour = colours[i % len(colours)]
        points.append((100 * x["rate"], 100 * y["rate"]))
        markers.append(points[-1])
        if worst:
            markers.append((100 * x["rate"], 100 * worst["rate"]))
            ax.errorbar(*markers[-1], yerr=_errors(worst), fmt="v", ms=8, mfc="white", mec=colour, ecolor=colour,
                        elinewidth=0.8, capsize=2, zorder=2)
            ax.plot([100 * x["rate"]] * 2, [100 * y["rate"], 100 * worst["rate"]], ":", color=colour, lw=1, zorder=1)
            ax.annotate(worst["set"].removeprefix("harmbench-"), markers[-1], xytext=(7, 0),
                        textcoords="offset points", va="center", fontsize=7, color=colour)
        ax.errorbar(*points[-1], xerr=_errors(x), yerr=_errors(y), fmt="o", ms=9, color=colour, ecolor=colour,
                    elinewidth=1.4, capsize=3, zorder=3)
    ax.plot([], [], "o", color="0.3", ms=8, label="HarmBench, plain requests")
    attacked = sorted({w["n"] for r in results for w in [r["summary"]["headline"]["worst_attack"]] if w})
    ax.plot([], [], "v", mfc="white", mec="0.3", ms=8,
            label=f"worst attack shape on {'/'.join(map(str, attacked))} HarmBench requests\n"
                  f"(jailbreak, pre-fill, sampling or multi-turn)")
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    first = results[0]["summary"]
    ax.set_xlabel(f"benign requests answered (%), higher is better\nheld-out benign set, n = "
                  f"{_n(results, 'benign-heldout')}", fontsize=11)
    ax.set_ylabel(f"attack success (%), lower is better\nharmful requests answered, HarmBench n = "
                  f"{_n(results, 'harmbench')}", fontsize=11)
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    limit = f", first {first['limit']} row{'s' * (first['limit'] > 1)} per set" if first.get("limit") else ""
    ax.set_title(f"Safety vs over-refusal on the held-out suite{limit}\ntarget {first['target']}, judge "
                 f"{first['judge']}; error bars: 95% Wilson intervals", fontsize=12)
    fig.tight_layout()
    _label_points(ax, points, markers, names, colours)
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _errors(share: dict) -> list[list[float]]:
    low, high = share["ci"]
    # Results written before wilson_interval pinned its ends to the rate can hold a bound 1e-17 past it.
    return [[100 * max(0.0, share["rate"] - low)], [100 * max(0.0, high - share["rate"])]]


# Label anchors around a point, in points: right, left, above, below, then the diagonals, then farther out.
_OFFSETS = [(12, 0), (-12, 0), (0, 14), (0, -14), (12, 14), (-12, 14), (12, -14), (-12, -14),
            (30, 22), (-30, 22), (30, -22), (-30, -22)]


def _label_points(ax, points, markers, names, colours) -> None:
    """Name each point where its label box is farthest from every marker and from the labels placed before it
    (in display pixels), inside the axes; a leader line joins label and point when the label sits away from it."""
    to_pixels = ax.transData.transform
    scale = ax.figure.dpi / 72  # points -> pixels
    box = ax.get_window_extent()
    obstacles = [tuple(to_pixels(m)) for m in markers]
    placed: list[tuple[float, float]] = []
    for (x, y), name, colour in zip(points, names, colours * (len(points) // len(colours) + 1)):
        px, py = to_pixels((x, y))
        width = 7.5 * scale * len(name)

        def centre(offset):
            dx, dy = offset
            return px + scale * dx + (width / 2 if dx >= 0 else -width / 2) * (dx != 0), py + scale * dy

        def clearance(offset):
            cx, cy = centre(offset)
            inside = box.x0 < cx - width / 2 and cx + width / 2 < box.x1 and box.y0 < cy - 8 < cy + 8 < box.y1
            others = [o for o in obstacles if o != (px, py)] + placed
            nearest = min((max(abs(cx - ox) - width / 2, 0) + 2 * abs(cy - oy) for ox, oy in others), default=1e9)
            return (inside, min(nearest, 60) - 0.1 * abs(offset[0]) - 0.1 * abs(offset[1]))

        offset = max(_OFFSETS, key=clearance)
        placed.append(centre(offset))
        far = abs(offset[0]) > 12 or abs(offset[1]) > 14
        ax.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize=10, fontweight="bold",
                    color=colour, ha="left" if offset[0] > 0 else "right" if offset[0] < 0 else "center",
                    va="center", zorder=4, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", color=colour, lw=0.8) if far else None)


# ------------------------------------------------------------------------------------------------ stack attribution
# Every judge's negative verdict (Judge.negative_verdict): the answers bench's summarise() counts neither as attack
# success nor as answered. Any other verdict let the request through.
_HELD_BACK = frozenset({"refused", "safe"})
# What a layer did inside the stack, read from the stack's records: the field the layer writes for every answer, and
# whether its value counts as the layer acting.
_SIGNALS = {"sentinel_suffix": ("sentinel_suffix", bool),
            "red_flag_fired": ("red_flag", lambda flag: bool(flag and flag.get("fired"))),
            "request_gate_passed": ("request_gate", lambda gate: bool(gate and gate.get("passed")))}
_SIGNAL_NAMES = {"sentinel_suffix": "sentinel suffix", "red_flag_fired": "flag fired",
                 "request_gate_passed": "passed the gate"}
# Settings two bench runs must share for their answers to compare row by row.
_SHARED_SETTINGS = {"target": lambda summary: summary.get("target"),
                    "judge": lambda summary: summary.get("judge"),
                    "limit": lambda summary: summary.get("limit"),
                    "max_new_tokens": lambda summary: summary["settings"].get("max_new_tokens"),
                    "seed": lambda summary: summary["settings"].get("seed"),
                    "attacker": lambda summary: (summary.get("attacker") or {}).get("spec")}
_EXAMPLES, _EXAMPLE_CHARS = 5, 100


def attribute_stack(stack: dict, members: list[dict]) -> dict:
    """Which layer of a defense stack refused or let through each request of the held-out suite: the stack's bench
    result compared row by row with its ``members``' (each layer, or a part of the stack, benched alone on the same
    suite), rows matched on (set, request, prompt).

    Returns ``{"stack", "members", "settings", "signals", "sets"}``, ``signals`` the in-stack signals the stack's
    records hold (``sentinel_suffix``: the sentinel appended a suffix; ``red_flag_fired``: the red flag fired;
    ``request_gate_passed``: the request reached the red flag's gate, so every layer acted on it), and
    per set (named as in the bench summary):

    - harmful sets: ``attack_success`` (``{"stack": count, "members": {spec: count alone}}``), ``best_member``,
      ``lost`` (requests the stack let through though a member alone refused them: ``{"any", "by_member"}``) and
      ``gained`` (requests the stack refused though every member alone let them through);
    - benign sets: ``answered``, ``best_member``, ``over_refused`` (benign requests the stack refused though a member
      alone answered them: ``{"any", "by_member"}``) and ``interaction`` (those every member alone answered);
    - both: ``label``, ``footnote``, ``n`` and ``in_stack``, the stack's own requests split by its verdict
      (``refused``, ``let_through``).

    Each group of requests is ``{"n", "sentinel_suffix", "red_flag_fired", "request_gate_passed", "examples"}``: how
    many, on how many of them each layer acted within the stack (``None`` where the stack has no such layer), and up
    to 5 of the requests, cut to 100 characters (``in_stack`` groups have no examples).

    Raises:
        ValueError: a member that is not part of the stack, or runs that cannot be compared row by row (different
            settings, or records that do not pair up).
    """
    stack_spec = stack["summary"]["defense"]
    specs = [member["summary"]["defense"] for member in members]
    _check_members(stack_spec, specs)
    settings = {name: setting(stack["summary"]) for name, setting in _SHARED_SETTINGS.items()}
    for spec, member in zip(specs, members):
        for name, setting in _SHARED_SETTINGS.items():
            if setting(member["summary"]) != settings[name]:
                raise ValueError(f"{spec} alone was benched with {name} {setting(member['summary'])!r}, the stack "
                                 f"with {settings[name]!r}; bench both with the same --{name.replace('_', '-')} so "
                                 f"their answers compare row by row.")
    stack_records = stack["records"]
    paired = [_paired(stack_records, member["records"], spec) for spec, member in zip(specs, members)]
    signals = [name for name, (field, _) in _SIGNALS.items() if any(field in r for r in stack_records)]
    rows = defaultdict(list)  # set -> [(the stack's record, each member's record of the same row)]
    for key, record, alone in zip(set_keys(stack_records), stack_records, zip(*paired)):
        rows[key].append((record, alone))
    # Suite order, as the bench summary lists the sets.
    keys = [key for key in dict.fromkeys([*stack["summary"]["sets"], *rows]) if key in rows]
    return {"stack": stack_spec, "members": specs, "settings": settings, "signals": signals,
            "sets": {key: {"footnote": stack["summary"]["sets"].get(key, {}).get("footnote", False),
                           **_attribute_set(rows[key], specs, signals)} for key in keys}}


def _check_members(stack_spec: str, specs: list[str]) -> None:
    layers = stack_spec.split("+")
    if not specs:
        raise ValueError(f"Give the bench result of at least one layer of {stack_spec} run alone to attribute the "
                         f"stack to its layers.")
    for spec in specs:
        outside = [layer for layer in spec.split("+") if layer not in layers]
        if outside:
            raise ValueError(f"The member {spec} is not part of the stack {stack_spec} ({', '.join(outside)} is not "
                             f"one of its layers); give bench results of its layers: {', '.join(layers)}.")
    repeated = [spec for spec, count in Counter(specs).items() if count > 1]
    if repeated:
        raise ValueError(f"The member {repeated[0]} is given more than once; give each member's bench result once.")


def _row_key(record: dict) -> tuple:
    return record["set"], record["request"], record["prompt"]


def _paired(stack_records: list[dict], member_records: list[dict], spec: str) -> list[dict]:
    """``member_records`` in the order of the ``stack_records`` they pair with on (set, request, prompt), the n-th
    of a repeated row with the n-th."""
    by_key = defaultdict(list)
    for record in member_records:
        by_key[_row_key(record)].append(record)
    seen = Counter()
    paired, unmatched = [], []
    for record in stack_records:
        key = _row_key(record)
        if seen[key] < len(by_key[key]):
            paired.append(by_key[key][seen[key]])
        else:
            unmatched.append(record)
        seen[key] += 1
    extra = sum(max(0, len(records) - seen[key]) for key, records in by_key.items())
    if unmatched or extra:
        first = (f"; first unmatched: {unmatched[0]['set']}: {_example(unmatched[0]['request'])!r}"
                 if unmatched else "")
        raise ValueError(f"The records of the stack and of {spec} alone do not pair up on (set, request, prompt): "
                         f"{len(unmatched)} of the stack's have no match in {spec}'s and {extra} of {spec}'s none "
                         f"in the stack's{first}. Bench the stack and each member on the same held-out suite (same "
                         f"--limit and --attacker, same hf-sentinel version).")
    return paired


def set_keys(records: list[dict]) -> list[str]:
    """Each bench record's set as the bench summary names it (:func:`hf_sentinel.evaluation.bench.summarise`):
    ``set``, or ``set/label`` where a set mixes harmful and benign rows (``own-test/harmful``)."""
    labels = defaultdict(set)
    for record in records:
        labels[record["set"]].add(record["label"])
    return [r["set"] if len(labels[r["set"]]) == 1 else f"{r['set']}/{r['label']}" for r in records]


def _let_through(record: dict) -> bool:
    return record["verdict"] not in _HELD_BACK


def _attribute_set(rows: list[tuple[dict, tuple[dict, ...]]], specs: list[str], signals: list[str]) -> dict:
    """One set of :func:`attribute_stack`'s result, from its (stack record, member records) rows."""
    label = rows[0][0]["label"]
    records = [record for record, _ in rows]
    through = [_let_through(record) for record in records]
    alone = [[_let_through(m) for m in members] for _, members in rows]  # alone[row][member]
    counts = {spec: sum(row[i] for row in alone) for i, spec in enumerate(specs)}
    entry = {"label": label, "n": len(rows), "in_stack": {
        "refused": _group([r for r, t in zip(records, through) if not t], signals, examples=False),
        "let_through": _group([r for r, t in zip(records, through) if t], signals, examples=False)}}
    if label == "harmful":
        # Worse than a member: the stack let through what that member alone refused.
        worse = [[t and not a for a in row] for t, row in zip(through, alone)]
        entry.update(attack_success={"stack": sum(through), "members": counts},
                     best_member=min(counts, key=counts.get),
                     lost=_worse_than_members(records, worse, specs, signals),
                     gained=_group([r for r, t, row in zip(records, through, alone) if not t and all(row)], signals))
    else:
        # Worse than a member: the stack refused a benign request that member alone answered.
        worse = [[not t and a for a in row] for t, row in zip(through, alone)]
        entry.update(answered={"stack": sum(through), "members": counts},
                     best_member=max(counts, key=counts.get),
                     over_refused=_worse_than_members(records, worse, specs, signals),
                     interaction=_group([r for r, t, row in zip(records, through, alone) if not t and all(row)],
                                        signals))
    return entry


def _worse_than_members(records: list[dict], worse: list[list[bool]], specs: list[str], signals: list[str]) -> dict:
    return {"any": _group([r for r, row in zip(records, worse) if any(row)], signals),
            "by_member": {spec: _group([r for r, row in zip(records, worse) if row[i]], signals)
                          for i, spec in enumerate(specs)}}


def _group(records: list[dict], signals: list[str], examples: bool = True) -> dict:
    """How many of the stack's ``records``, on how many of them each layer acted within the stack (``None`` for a
    signal the stack's records do not hold), and up to 5 of their requests."""
    group = {"n": len(records)}
    for name, (field, acted) in _SIGNALS.items():
        group[name] = sum(acted(r.get(field)) for r in records) if name in signals else None
    if examples:
        group["examples"] = [_example(r["request"]) for r in records[:_EXAMPLES]]
    return group


def _example(text: str) -> str:
    return text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS - 1] + "…"


def attribution_table(attribution: dict) -> str:
    """:func:`attribute_stack`'s result as text: per set, the stack's count against each layer alone and how often
    the stack was worse than a layer; what each layer did inside the stack, by the stack's verdict; then, for each
    set where the stack was worse, the in-stack signals on those requests, per layer, with examples."""
    members, signals = attribution["members"], attribution["signals"]
    sets = attribution["sets"]
    harmful = [("set", "n", "stack", *members, "best layer", "lost", "gained")]
    benign = [("set", "n", "stack", *members, "best layer", "over-refused", "interaction")]
    in_stack = [("set", "stack refused", *map(_SIGNAL_NAMES.get, signals),
                 "let through", *map(_SIGNAL_NAMES.get, signals))]
    for key, entry in sets.items():
        name = f"{key} (footnote)" if entry["footnote"] else key
        if entry["label"] == "harmful":
            counts, worse, better = entry["attack_success"], entry["lost"]["any"], entry["gained"]
        else:
            counts, worse, better = entry["answered"], entry["over_refused"]["any"], entry["interaction"]
        table = harmful if entry["label"] == "harmful" else benign
        table.append((name, entry["n"], _count(counts["stack"], entry["n"]),
                      *(_count(counts["members"][spec], entry["n"]) for spec in members), entry["best_member"],
                      worse["n"], better["n"]))
        refused, through = entry["in_stack"]["refused"], entry["in_stack"]["let_through"]
        in_stack.append((name, refused["n"], *(refused[s] for s in signals),
                         through["n"], *(through[s] for s in signals)))
    parts = [_attribution_caption(attribution)]
    if len(harmful) > 1:
        parts += [f"Harmful sets: {ATTACK_SUCCESS} (requests let through), the stack and each layer alone; lost = let "
                  f"through by the stack though a layer alone refused it, gained = refused by the stack though every "
                  f"layer alone let it through", _format(harmful)]
    if len(benign) > 1:
        parts += [f"Benign sets: {ANSWERED}, the stack and each layer alone; over-refused = refused by the stack "
                  f"though a layer alone answered it, interaction = refused by the stack though every layer alone "
                  f"answered it", _format(benign)]
    if signals:
        parts += ["Inside the stack, by its verdict: requests, and on how many each layer acted", _format(in_stack)]
    parts.append(_worse_details(sets, members, signals))
    return "\n\n".join(parts)


def _attribution_caption(attribution: dict) -> str:
    settings = attribution["settings"]
    limit = f", first {settings['limit']} rows per set" if settings["limit"] else ", whole suite"
    return (f"Stack {stack_label(attribution['stack'], settings['attacker'])} against its layers alone "
            f"({', '.join(attribution['members'])}) | target {settings['target']} | judge {settings['judge']} | "
            f"{settings['max_new_tokens']} new tokens{limit}")


def _worse_details(sets: dict, members: list[str], signals: list[str]) -> str:
    """Per set where the stack was worse than a layer alone: per layer, how often and what the layers did inside
    the stack on those requests; then the interaction (benign sets) and examples."""
    lines = []
    for key, entry in sets.items():
        harmful = entry["label"] == "harmful"
        worse = entry["lost"] if harmful else entry["over_refused"]
        if not worse["any"]["n"]:
            continue
        lines.append(f"{key}: the stack {'let through' if harmful else 'refused'} {worse['any']['n']} of "
                     f"{entry['n']} {'harmful' if harmful else 'benign'} requests that a layer alone "
                     f"{'refused' if harmful else 'answered'}")
        for spec in members:
            group = worse["by_member"][spec]
            if group["n"]:
                lines.append(f"  {spec} alone {'refused' if harmful else 'answered'} {group['n']}; within the "
                             f"stack: {_signals_text(group, signals)}")
        if not harmful and entry["interaction"]["n"]:
            lines.append(f"  every layer alone answered {entry['interaction']['n']} (interaction); within the stack: "
                         f"{_signals_text(entry['interaction'], signals)}")
        lines += [f"  e.g. {example!r}" for example in worse["any"]["examples"]]
    if not lines:
        return "The stack did no worse than any layer alone on any request."
    return "Where the stack did worse than a layer alone\n" + "\n".join(lines)


def _signals_text(group: dict, signals: list[str]) -> str:
    counts = [f"{_SIGNAL_NAMES[signal]} on {group[signal]}/{group['n']}" for signal in signals]
    return ", ".join(counts) or "no in-stack signal recorded"


def _count(k: int, n: int) -> str:
    return f"{k} ({k / n:.1%})"


def _share_cells(share: dict) -> tuple[str, str, str]:
    return str(share["n"]), f"{share['rate']:.1%}", _ci(share)


def _rate_ci(share: dict | None, short: bool = False) -> str:
    """``97.0 [93.6, 98.6]``; ``short``: the interval in whole percent, for side-by-side columns."""
    if not share:
        return "-"
    low, high = share["ci"]
    return f"{100 * share['rate']:.1f} [{100 * low:.0f}, {100 * high:.0f}]" if short else \
        f"{100 * share['rate']:.1f} {_ci(share)}"


def _ci(share: dict) -> str:
    low, high = share["ci"]
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def _format(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
