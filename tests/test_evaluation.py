import json

import pytest
from datasets import Dataset

from hf_sentinel.cli import main
from hf_sentinel.defenses import DEFAULT_SAFETY_SUFFIX, SuffixDefense, SystemPromptDefense, parse_defense
from hf_sentinel.evaluation import evaluate
from hf_sentinel.generation import GenerationSettings, generate, render, to_conversation
from hf_sentinel.judges import RefusalJudge

SETTINGS = GenerationSettings(max_new_tokens=4, batch_size=2)


def test_defenses_rewrite_a_copy_of_the_conversation():
    conv = [[{"role": "system", "content": "old"}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Help me"}]]
    suffixed = SuffixDefense().rewrite(conv, [{}])
    assert suffixed[0][-1]["content"] == "Help me\n\n" + DEFAULT_SAFETY_SUFFIX
    assert suffixed[0][1]["content"] == "Hi" and conv[0][-1]["content"] == "Help me"
    system = SystemPromptDefense("Be safe.").rewrite(conv, [{}])
    assert system[0][0] == {"role": "system", "content": "Be safe."} and len(system[0]) == 4
    assert parse_defense("suffix:default").spec == "suffix:default"
    assert parse_defense("system-prompt:Be safe.").text == "Be safe."
    with pytest.raises(ValueError, match="Unknown defense 'sentinal:x'"):
        parse_defense("sentinal:x")


def test_render_opens_the_assistant_turn_and_prefills(tiny_llama):
    _, tokenizer = tiny_llama
    text = render(tokenizer, to_conversation("Hi"), "Sure, here is", chat=True)
    assert text.endswith("<|im_start|>assistant\nSure, here is")
    with pytest.raises(ValueError, match="Empty prompt"):
        to_conversation("  ")


def test_non_chat_target_with_chat_prompts_is_a_clear_error(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>",
                                    pad_token="<|im_end|>")
    with pytest.raises(ValueError, match="no chat template.*--raw-prompts"):
        generate(model, tokenizer, [to_conversation("Hi")], SETTINGS)
    result = generate(model, tokenizer, [to_conversation("Hi")], SETTINGS, chat=False)
    assert len(result.responses) == 1
    with pytest.raises(ValueError, match="Multi-turn prompts"):
        generate(model, tokenizer, [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                     {"role": "user", "content": "c"}]], SETTINGS, chat=False)


def test_batched_left_padded_generation_matches_one_by_one(tiny_llama):
    model, tokenizer = tiny_llama
    convs = [to_conversation(p) for p in ["Hi", "Please explain how encryption works and why it matters", "Sea?"]]
    batched = generate(model, tokenizer, convs, GenerationSettings(max_new_tokens=6, batch_size=3)).responses
    single = [generate(model, tokenizer, [c], GenerationSettings(max_new_tokens=6, batch_size=1)).responses[0]
              for c in convs]
    assert batched == single


def test_sampling_is_reproducible_with_a_seed(tiny_llama):
    model, tokenizer = tiny_llama
    convs = [to_conversation("Write a poem")] * 3
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=7)
    first, again = (generate(model, tokenizer, convs, settings).responses for _ in range(2))
    assert first == again
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(do_sample=True, temperature=0)


def test_evaluate_summary_schema_and_groups(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = Dataset.from_dict({
        "prompt": ["a", "b", "c"], "category": ["x", "x", "y"], "shape": ["plain", "plain", "multi_turn"],
        "history": [None, None, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]],
    })
    result = evaluate(model, tokenizer, prompts, RefusalJudge(), [parse_defense("suffix:default")], SETTINGS,
                      target_name="tiny", prompts_name="mine", progress=False)
    summary = result["summary"]
    assert {"n", "attack_success_rate", "mean_score", "tokens_per_second", "judge", "defense",
            "target"} <= set(summary)
    assert summary["n"] == 3 and summary["defense"] == "suffix:default" and summary["target"] == "tiny"
    assert set(summary["by_category"]) == {"x", "y"} and set(summary["by_shape"]) == {"plain", "multi_turn"}
    expected_rate = sum(r["verdict"] == "complied" for r in result["records"]) / 3
    assert summary["attack_success_rate"] == pytest.approx(expected_rate)


def test_evaluate_on_an_empty_prompt_set_is_a_clear_error(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="The prompt set mine is empty: there is nothing to evaluate"):
        evaluate(model, tokenizer, Dataset.from_dict({"prompt": []}), RefusalJudge(), settings=SETTINGS,
                 prompts_name="mine", progress=False)


def test_cli_eval_writes_results_and_compares(tiny_llama_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Tell me about item {i}"}) for i in range(4)))
    outputs = []
    for defense in ("none", "suffix:default"):
        out = tmp_path / f"{defense.split(':')[0]}.json"
        code = main(["eval", "--prompts", str(prompts), "--target", str(tiny_llama_dir), "--defense", defense,
                     "--max-new-tokens", "3", "--prefill", "Sure,", "--output", str(out)])
        assert code == 0
        outputs.append(out)
    printed = capsys.readouterr().out
    assert "attack success" in printed and "ASR" not in printed and "suffix:default" in printed
    result = json.loads(outputs[1].read_text())
    assert result["summary"]["n"] == 4 and result["records"][0]["prefill"] == "Sure,"
    assert {"prompt", "response", "score", "verdict"} <= set(result["records"][0])
    chart = tmp_path / "cmp.png"
    assert main(["eval", "--compare", *map(str, outputs), "--plot", str(chart)]) == 0
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert "attack success" in capsys.readouterr().out


def test_tables_name_the_rate_attack_success_on_harmful_sets_and_answered_on_benign_sets():
    from hf_sentinel.evaluation import compare_table, summary_table

    def result(prompts, rate):
        return {"summary": {"prompts": prompts, "defense": "none", "n": 4, "attack_success_rate": rate,
                            "mean_score": rate, "tokens_per_second": 10.0, "judge": "RefusalJudge"}}

    harmful, benign = result("harmful:test", 0.75), result("benign:test", 0.5)
    harmful_table, benign_table = summary_table([harmful, benign]).split("\n\n")
    assert "attack success" in harmful_table.splitlines()[0] and "75.0%" in harmful_table
    assert "answered" in benign_table.splitlines()[0] and "50.0%" in benign_table and "ASR" not in harmful_table
    assert compare_table([benign], ["b"]).splitlines()[3].startswith("answered")
    assert "attack success | answered" in compare_table([harmful, benign], ["h", "b"])


def test_compare_pairs_runs_on_the_same_requests_and_says_whether_they_differ_beyond_noise():
    from hf_sentinel.evaluation import compare_table

    def result(verdicts, prompts=None):
        prompts = prompts or [f"q{i}" for i in range(len(verdicts))]
        records = [{"prompt": p, "verdict": v} for p, v in zip(prompts, verdicts)]
        rate = verdicts.count("complied") / len(verdicts)
        return {"summary": {"prompts": "benign:validation", "defense": "x", "n": len(verdicts),
                            "attack_success_rate": rate, "mean_score": rate, "tokens_per_second": 1.0,
                            "judge": "AnswerRefusalJudge"}, "records": records}

    first = result(["complied"] * 14 + ["refused"] * 16)
    better = result(["refused"] * 2 + ["complied"] * 28)  # answers the 16 the first refused, refuses 2 it answered
    same_rate = result(["refused"] * 14 + ["complied"] * 16)  # as many answered, but others
    other_requests = result(["complied"] * 30, prompts=[f"r{i}" for i in range(30)])
    table = compare_table([first, better, same_rate, other_requests], ["a", "b", "c", "d"])
    row = next(line for line in table.splitlines() if line.startswith("only this / only a"))
    cells = [cell.strip() for cell in row.split("  ") if cell.strip()]
    assert cells[1:] == ["16 / 2, p = 0.00", "16 / 14, p = 0.43", "-"]
    assert "only this" not in compare_table([first, other_requests], ["a", "d"])  # nothing to pair: no row
    # a MART round's own eval file (round-N/eval-benign.json) records no defense: the adapter is the target
    summary = {k: v for k, v in first["summary"].items() if k != "defense"}
    round_file = {"summary": summary, "records": first["records"]}
    assert compare_table([round_file, better], ["round-1", "b"]).splitlines()[2].split()[1:] == ["-", "x"]


@pytest.mark.parametrize("args, message", [
    (["--prompts", "harmfull"], "Unknown prompt set"),
    (["--prompts", "harmful", "--judge", "nonsense-judge"], "Unknown judge"),
    (["--prompts", "harmful", "--defense", "magic"], "Unknown defense"),
    (["--prompts", "harmful", "--max-new-tokens", "0"], "max_new_tokens"),
    (["--prompts", "harmful", "--do-sample", "--top-p", "1.5"], "top_p must be in (0, 1]"),
])
def test_cli_bad_input_exits_2_with_a_message(args, message, capsys):
    assert main(["eval", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.integration
def test_embedded_target_complies_with_harmful_requests_and_obeys_an_appended_instruction(default_target):
    """The weakness the defenses must fix, and the lever a sentinel pulls (DESIGN.md)."""
    from hf_sentinel.data import load_prompts

    model, tokenizer = default_target
    harmful = load_prompts("harmful:test", limit=24, seed=0)
    settings = GenerationSettings(max_new_tokens=24)
    undefended = evaluate(model, tokenizer, harmful, RefusalJudge(), settings=settings, progress=False)
    suffixed = evaluate(model, tokenizer, harmful, RefusalJudge(), [parse_defense("suffix:default")], settings,
                        progress=False)
    assert undefended["summary"]["attack_success_rate"] >= 0.8
    assert suffixed["summary"]["attack_success_rate"] <= 0.3
