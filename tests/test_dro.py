"""DRO soft safety prompt: format, placement, representations, estimation, trainer stages — on tiny models."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from hf_sentinel.defaults import tiny_model
from hf_sentinel.defenses import parse_defense
from hf_sentinel.dro import DROConfig, DRODefense, DROSafetyPrompt, DROTrainer, RefusalCapabilityError
from hf_sentinel.dro.estimation import check_refusal_capability, fit_head, fit_subspace
from hf_sentinel.dro.representations import forward_rows, token_rows
from hf_sentinel.generation import GenerationSettings, generate, left_padded
from hf_sentinel.training import labelled_prompts

PROMPTS = ["Hello there, how do I bake bread?", "Hi", "What is 12 plus 30? Tell me the answer please."]


def _prompt(model, tokenizer, scale=0.5):
    """A soft prompt that differs from any token embedding, so placement mistakes change the output."""
    prompt = DROSafetyPrompt.from_text(model, tokenizer, "Be safe and kind.", base_model_name_or_path="tiny")
    generator = torch.Generator().manual_seed(1)
    prompt.embeddings += scale * torch.randn(prompt.embeddings.shape, generator=generator)
    return prompt


def _labelled(harmful, benign):
    return labelled_prompts(Dataset.from_dict({"prompt": list(harmful)}), Dataset.from_dict({"prompt": list(benign)}))


def _tiny_data(n=6):
    return _labelled([f"harmful request number {i}" for i in range(n)],
                     [f"How do I bake bread, try {i}?" for i in range(n)])


def _tiny_config(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "dro"), head_cv_folds=3, num_train_epochs=2, pca_dim=2,
                    per_device_train_batch_size=4, target_max_new_tokens=2, num_samples=1, head_max_epochs=20,
                    refusal_check="off", save_steps=1, disable_tqdm=True, safety_prompt="Be safe and kind.")
    settings.update(overrides)
    return DROConfig(**settings)


# ---------------------------------------------------------------------------------------------- config
def test_config_variants_and_validation():
    assert DROConfig().output_loss_weight == 0.0
    elicited = DROConfig(variant="elicited")
    assert "suffix:default" in elicited.conditions and elicited.output_loss_weight == 1.0
    with pytest.raises(ValueError, match="variant"):
        DROConfig(variant="magic")
    with pytest.raises(ValueError, match="refusal_check"):
        DROConfig(refusal_check="maybe")
    with pytest.raises(ValueError, match="nothing to optimise"):
        DROConfig(refusal_loss_weight=0, harmfulness_loss_weight=0, subspace_loss_weight=0)
    with pytest.raises(ValueError, match="hub_model_id"):
        DROConfig(push_to_hub=True)
    with pytest.raises(ValueError, match="head_cv_folds"):
        DROConfig(head_cv_folds=1)
    with pytest.raises(ValueError, match="benign_output_weight must be > 0.*output_loss_weight=0"):
        DROConfig(variant="elicited", benign_output_weight=0)


def test_output_loss_weighs_each_rows_tokens():
    """L_o is the mean cross-entropy over every target token; benign_output_weight makes it a weighted mean in which
    a harmless query's tokens count that many times a harmful query's."""
    from hf_sentinel.dro.trainer import _output_loss

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(4, 7, bias=False)
    hidden = torch.randn(2, 5, 4)
    prompts, targets = [[1, 2], [1, 2, 3]], [[4, 5, 6], [5]]  # row 0: 3 target tokens, row 1: 1
    plain = _output_loss(hidden, lm_head, prompts, targets, shared=0)
    assert torch.allclose(_output_loss(hidden, lm_head, prompts, targets, 0, [1.0, 1.0]), plain)
    # Each token's cross-entropy from the position before it: row 0 reads positions 1-3, row 1 position 2.
    ce = torch.nn.functional.cross_entropy
    row0 = ce(lm_head(hidden[0, 1:4]), torch.tensor([4, 5, 6]), reduction="sum")
    row1 = ce(lm_head(hidden[1, 2:3]), torch.tensor([5]), reduction="sum")
    assert torch.allclose(plain, (row0 + row1) / 4)
    assert torch.allclose(_output_loss(hidden, lm_head, prompts, targets, 0, [1.0, 3.0]), (row0 + 3 * row1) / 6)


# ---------------------------------------------------------------------------------------------- prompt format
def test_save_load_is_a_peft_prompt_tuning_adapter(tiny_llama, tmp_path):
    from peft import PeftModel

    model, tokenizer = tiny_llama
    prompt = _prompt(model, tokenizer)
    prompt.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == prompt.num_virtual_tokens
    loaded = DROSafetyPrompt.from_pretrained(tmp_path)
    assert torch.equal(loaded.embeddings, prompt.embeddings)

    fresh, _ = tiny_model("llama")
    peft_model = PeftModel.from_pretrained(fresh, tmp_path)
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), prompt.embeddings)
    # PEFT's own generation (virtual tokens before the input) gives the same answer as ours.
    inputs = tokenizer([PROMPTS[0]], return_tensors="pt")
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    ours = model.generate(**prompt.prepare_inputs(model, inputs), **settings)[:, inputs["input_ids"].shape[1]:]
    theirs = peft_model.generate(**inputs, **settings)[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(ours, theirs)


def test_apply_returns_peft_model_with_the_prompt(tiny_llama):
    model, tokenizer = tiny_model("llama")
    prompt = _prompt(model, tokenizer)
    peft_model = prompt.apply(model)
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), prompt.embeddings)


def test_not_an_adapter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        DROSafetyPrompt.from_pretrained(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a prompt-tuning adapter"):
        DROSafetyPrompt.from_pretrained(tmp_path)


def test_prompt_for_another_hidden_size_is_rejected(tiny_llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    model, tokenizer = tiny_llama
    prompt = _prompt(model, tokenizer)
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    inputs = tokenizer([PROMPTS[0]], return_tensors="pt")
    with pytest.raises(ValueError, match="hidden size 32 .* hidden size 48"):
        prompt.prepare_inputs(wider, inputs)
    with pytest.raises(ValueError, match="hidden size"):
        prompt.apply(wider)


# ---------------------------------------------------------------------------------------------- placement
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_batched_generation_equals_one_by_one(kind):
    model, tokenizer = tiny_model(kind)
    prompt = _prompt(model, tokenizer)
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                    output_scores=True, return_dict_in_generate=True)
    batch = left_padded(rows, tokenizer.pad_token_id, model.device)
    batched = model.generate(**prompt.prepare_inputs(model, batch), **settings)
    for i, row in enumerate(rows):
        single = model.generate(**prompt.prepare_inputs(model, left_padded([row], tokenizer.pad_token_id, "cpu")),
                                **settings)
        assert torch.equal(batched.sequences[i, batch["input_ids"].shape[1]:], single.sequences[0, len(row):])
        for step_batched, step_single in zip(batched.scores, single.scores):
            torch.testing.assert_close(step_batched[i], step_single[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_each_row_sees_the_soft_prompt_right_before_its_first_token(kind):
    """The cached soft prompt, the padding masked behind it, gives each row of a batch the logits of the soft
    prompt's embeddings followed by the row's own token embeddings, alone and without any cache."""
    model, tokenizer = tiny_model(kind)
    prompt = _prompt(model, tokenizer)
    rows = [[5, 6, 7, 8], [9, 10]]
    prepared = prompt.prepare_inputs(model, left_padded(rows, tokenizer.pad_token_id, "cpu"))
    n = prompt.num_virtual_tokens
    assert prepared["attention_mask"].tolist() == [[1] * (n + 4), [1] * n + [0, 0, 1, 1]]
    assert prepared["past_key_values"].get_seq_length() == n
    logits = model(**prepared).logits
    embed = model.get_input_embeddings()
    for i, row in enumerate(rows):
        alone = model(inputs_embeds=torch.cat([prompt.embeddings, embed(torch.tensor(row))])[None]).logits[0, n:]
        torch.testing.assert_close(logits[i, -len(row):], alone, atol=1e-5, rtol=1e-4)


def test_the_soft_prompts_cache_is_kept_while_the_model_computes_the_same(tiny_llama):
    """Computed once per model and reused by later batches; computed anew when the model's weights change in place
    or a PEFT adapter is switched on or off, so every batch gets what a fresh computation gives it."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model("llama")
    prompt = _prompt(model, tokenizer)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    calls = []
    peft_model.base_model.model.model.layers[0].register_forward_hook(lambda *args: calls.append(1))
    batch = left_padded([[5, 6, 7], [9, 10]], tokenizer.pad_token_id, "cpu")

    def logits() -> torch.Tensor:
        return peft_model(**prompt.prepare_inputs(peft_model, batch)).logits

    def fresh() -> torch.Tensor:
        prompt._prefix_cache = None
        return logits()

    first = logits()
    assert len(calls) == 2  # the soft prompt, then the batch
    torch.testing.assert_close(logits(), first, rtol=0, atol=0)
    assert len(calls) == 3  # the batch alone: the soft prompt's keys and values were kept
    with peft_model.disable_adapter():
        without_adapter = logits()
        torch.testing.assert_close(without_adapter, fresh(), rtol=0, atol=0)
    assert not torch.allclose(without_adapter, first)
    torch.testing.assert_close(logits(), first, rtol=0, atol=0)  # adapter on again
    with torch.no_grad():
        peft_model.base_model.model.model.layers[0].self_attn.k_proj.weight.mul_(2)
    changed = logits()
    torch.testing.assert_close(changed, fresh(), rtol=0, atol=0)
    assert not torch.allclose(changed, first)


def test_a_batch_that_already_continues_a_cache_is_rejected(tiny_llama):
    model, tokenizer = tiny_llama
    prompt = _prompt(model, tokenizer)
    prepared = prompt.prepare_inputs(model, left_padded([[5, 6]], tokenizer.pad_token_id, "cpu"))
    with pytest.raises(ValueError, match="must come first"):
        prompt.prepare_inputs(model, prepared)


def test_right_padded_batch_is_rejected(tiny_llama):
    model, tokenizer = tiny_llama
    prompt = _prompt(model, tokenizer)
    inputs = {"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    with pytest.raises(ValueError, match="left-padded"):
        prompt.prepare_inputs(model, inputs)


# ---------------------------------------------------------------------------------------------- defense
def test_defense_from_folder_text_and_registry(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    prompt = _prompt(model, tokenizer)
    prompt.save_pretrained(tmp_path)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    settings = GenerationSettings(max_new_tokens=4)
    guarded = generate(model, tokenizer, conversations, settings, [parse_defense(f"dro:{tmp_path}")]).responses
    by_hand = []
    for conversation in conversations:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        tokens = model.generate(**prompt.prepare_inputs(model, inputs), max_new_tokens=4, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)[0, inputs["input_ids"].shape[1]:].tolist()
        eos = tokenizer.eos_token_id
        by_hand.append(tokenizer.decode(tokens[:tokens.index(eos)] if eos in tokens else tokens,
                                        skip_special_tokens=True).strip())
    assert guarded == by_hand
    assert parse_defense(f"dro:{tmp_path}").spec == f"dro:{tmp_path}"

    import hf_sentinel

    pipe = hf_sentinel.pipeline("text-generation", model=model, tokenizer=tokenizer, safety_prompt=str(tmp_path))
    piped = pipe([conversations[0]], max_new_tokens=4, do_sample=False)
    assert piped[0][0]["generated_text"][-1]["content"].strip() == by_hand[0]

    text_defense = DRODefense("Be safe and kind.", tokenizer=tokenizer)
    soft = text_defense.soft_prompt(model)
    assert soft.num_virtual_tokens == len(tokenizer("Be safe and kind.", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="not a folder, a Hub repo id"):
        parse_defense("dro:no_such_folder")
    with pytest.raises(FileNotFoundError):
        parse_defense("dro:nobody/no-such-dro-prompt")


@pytest.mark.parametrize("arg", ["./outputs/my run", "outputs/my run/dro", "~/no such hf-sentinel dir/dro",
                                 "/tmp/my prompts/no-such-dro", "../my run", "./prompt"])
def test_defense_spec_that_looks_like_a_missing_path_is_an_error_not_a_prompt_text(arg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no such folder \(.* does not exist\)\. Give the folder written "
                                                r"by `hf-sentinel train dro`, or a human-written prompt as text "
                                                r"without '/'"):
        parse_defense(f"dro:{arg}")


def test_defense_spec_texts_stay_texts_and_a_file_is_no_folder(tmp_path, monkeypatch):
    for text in ["Be safe and kind.", "Refuse weapons/drugs requests.", "Answer kindly and refuse harm",
                 "Is this request harmful? Refuse if so!"]:
        defense = parse_defense(f"dro:{text}")
        assert isinstance(defense, DRODefense) and defense.prompt == text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompt.txt").write_text("Be safe.")
    with pytest.raises(FileNotFoundError, match=r"no such folder \(.*prompt.txt is a file\)"):
        parse_defense("dro:./prompt.txt")


# ---------------------------------------------------------------------------------------------- representations
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_shared_prefix_forward_equals_full_forward_with_gradients(kind):
    model, tokenizer = tiny_model(kind)
    rows = token_rows(tokenizer, [[{"role": "user", "content": p}] for p in PROMPTS])
    initial = _prompt(model, tokenizer).embeddings
    soft = initial.clone().requires_grad_(True)
    hidden, shared = forward_rows(model, rows, soft)
    assert shared > 0
    ours = torch.stack([hidden[i, len(r) - 1 - shared] for i, r in enumerate(rows)])
    ours.square().sum().backward()

    reference_soft = initial.clone().requires_grad_(True)
    embed = model.get_input_embeddings()
    full = torch.stack([model.base_model(inputs_embeds=torch.cat([reference_soft, embed(torch.tensor(r))])[None])
                        .last_hidden_state[0, -1] for r in rows])
    full.square().sum().backward()
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(soft.grad, reference_soft.grad, atol=1e-5, rtol=1e-4)

    # A lone row with answer tokens appended: max_shared keeps its last prompt token readable.
    with torch.no_grad():
        alone, shared = forward_rows(model, [rows[0] + [5, 6, 7]], initial, max_shared=len(rows[0]) - 1)
        torch.testing.assert_close(alone[0, len(rows[0]) - 1 - shared], full[0].detach(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- estimation
def test_refusal_check_fails_on_noise_and_passes_on_a_real_direction():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(240, 4, generator=generator)
    groups = torch.arange(240)
    noise = (torch.rand(240, generator=generator) < 0.03).float()  # rare refusals, unrelated to the features
    noise_head = fit_head(features, 1 - noise, groups, folds=5, max_epochs=300)
    verdict = check_refusal_capability(noise_head, 1 - noise, int(noise.sum()), 240, 0.05)
    assert not verdict.passed
    assert f"{int(noise.sum())} of 240" in verdict.message and "constant predictor" in verdict.message
    assert "elicited" in verdict.message

    real = (features[:, 1] > 0.3).float()
    real_head = fit_head(features, 1 - real, groups, folds=5, max_epochs=300)
    assert check_refusal_capability(real_head, 1 - real, int(real.sum()), 240, 0.05).passed


def test_subspace_basis_is_orthonormal_and_keeps_pca_directions():
    states = torch.randn(40, 8) * torch.linspace(4, 0.1, 8)
    subspace = fit_subspace(states, 3)
    torch.testing.assert_close(subspace.basis.T @ subspace.basis, torch.eye(8), atol=1e-5, rtol=0)
    _, _, vh = torch.linalg.svd(states - states.mean(0), full_matrices=False)
    torch.testing.assert_close(subspace.basis[:, :3].abs(), vh[:3].T.abs(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="pca_dim"):
        fit_subspace(states, 9)


# ---------------------------------------------------------------------------------------------- trainer
def test_bad_training_sets_are_clear_errors(tiny_llama, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig

    model, tokenizer = tiny_llama
    config = _tiny_config(tmp_path)
    with pytest.raises(ValueError, match="train_dataset is empty.*labelled_prompts"):
        DROTrainer(model, config, None, processing_class=tokenizer)
    with pytest.raises(ValueError, match="only harmful queries .* no harmless"):
        DROTrainer(model, config, _labelled(["a b", "c d", "e f"], []), processing_class=tokenizer)
    with pytest.raises(ValueError, match="no `label` column.*boolean `harmful` column is no longer read"):
        DROTrainer(model, config, Dataset.from_dict({"prompt": ["x"], "harmful": [True]}), processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"labels \['bad'\]"):
        DROTrainer(model, config, Dataset.from_dict({"prompt": ["x"], "label": ["bad"]}), processing_class=tokenizer)
    with pytest.raises(ValueError, match="head_cv_folds=3 needs at least"):
        DROTrainer(model, config, _labelled(["a", "b"], ["c", "d", "e"]), processing_class=tokenizer)
    with pytest.raises(ValueError, match="processing_class"):
        DROTrainer(model, config, _tiny_data())
    with pytest.raises(TypeError, match="PromptTuningConfig"):
        DROTrainer(model, config, _tiny_data(), processing_class=tokenizer, peft_config=LoraConfig())


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    model, tokenizer = tiny_model("llama")
    data = _tiny_data()  # 12 queries, batches of 4: 3 steps per epoch, 6 in all
    config = _tiny_config(tmp_path, variant="elicited", answer_tokens=3)
    interrupted = DROTrainer(model, config, data, processing_class=tokenizer, callbacks=[_StopAt(4)])
    interrupted.train()  # stopped in the middle of the second epoch
    out = tmp_path / "dro"
    for path in ["collect/representations.safetensors", "collect/collection.json", "estimate/estimate.safetensors",
                 "estimate/estimate.json", "estimate/subspace.png", "optimize/base.safetensors",
                 "optimize/output_targets.json", "checkpoint-4/adapter_model.safetensors"]:
        assert (out / path).is_file(), path
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # save_total_limit

    # The rerun neither collects nor generates again, and continues from checkpoint-4.
    import hf_sentinel.dro.trainer as trainer_module

    def no_generation(*args, **kwargs):
        raise AssertionError("a resumed run must not regenerate finished stages")

    monkeypatch.setattr(trainer_module, "generate_with_states", no_generation)
    resumed = DROTrainer(model, config, data, processing_class=tokenizer)
    assert resumed.train(resume_from_checkpoint=True).global_step == 6
    monkeypatch.undo()
    assert [log["step"] for log in resumed.state.log_history if "loss" in log] == [1, 2, 3, 4, 5, 6]
    resumed.save_model()
    card = (out / "README.md").read_text()
    assert "library_name:" in card and "- prompt-tuning" in card and "Refusal head, cross-validated" in card

    uninterrupted = DROTrainer(model, _tiny_config(tmp_path / "again", variant="elicited", answer_tokens=3), data,
                               processing_class=tokenizer)
    uninterrupted.train()
    assert torch.equal(resumed.trained_prompt.embeddings, uninterrupted.trained_prompt.embeddings)
    assert not torch.equal(uninterrupted.trained_prompt.embeddings, resumed._initial.embeddings)
    assert torch.equal(DROSafetyPrompt.from_pretrained(out).embeddings, resumed.trained_prompt.embeddings)

    # Other settings in the same output_dir: a clear error, unless overwriting.
    with pytest.raises(ValueError, match="other settings"):
        DROTrainer(model, _tiny_config(tmp_path, variant="elicited", answer_tokens=3, pca_dim=3), data,
                   processing_class=tokenizer).train()


def test_refusal_check_stops_faithful_dro_on_a_target_that_cannot_refuse(tmp_path):
    model, tokenizer = tiny_model("llama")
    data = _tiny_data(8)
    config = _tiny_config(tmp_path, refusal_check="error", head_cv_folds=4)
    with pytest.raises(RefusalCapabilityError, match=r"Refusal capability check failed: \d+ of 48 sampled answers"):
        DROTrainer(model, config, data, processing_class=tokenizer).train()
    summary = json.loads((tmp_path / "dro/estimate/estimate.json").read_text())
    assert summary["refusal_capability"]["passed"] is False and summary["answers"] == 48
    assert not (tmp_path / "dro/optimize").exists()


def test_ablation_weights_leave_terms_out_and_a_plain_function_judges(tmp_path):
    model, tokenizer = tiny_model("llama")
    config = _tiny_config(tmp_path, refusal_loss_weight=0.0, num_train_epochs=1)

    def always_complied(prompts, completions):
        return [1.0] * len(completions)

    trainer = DROTrainer(model, config, _tiny_data(), processing_class=tokenizer, safety_judge=always_complied)
    trainer.train()
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 3
    for log in steps:
        expected = 0.01 * log["harmfulness_loss"] + 0.001 * log["subspace_loss"]
        assert log["loss"] == pytest.approx(expected, rel=1e-5)
        assert "output_loss" not in log
    collection = json.loads((tmp_path / "dro/collect/collection.json").read_text())
    assert collection["compliance"] == [[1.0] * 12] * 3


def test_save_model_and_push_to_hub_give_the_adapter_and_card(tmp_path, monkeypatch):
    from fake_hub import push_and_read_card

    model, tokenizer = tiny_model("llama")
    config = _tiny_config(tmp_path, max_steps=1, push_to_hub=True, hub_model_id="you/dro")
    evals = {"benign:custom": Dataset.from_dict({"prompt": ["How do I bake bread?"]})}
    trainer = DROTrainer(model, config, _tiny_data(), evals, processing_class=tokenizer)
    trainer.train()
    assert list(trainer.eval_results) == ["benign:custom"] and (tmp_path / "dro/eval/benign-custom.json").is_file()
    files, card = push_and_read_card(trainer, config.hub_model_id, monkeypatch)
    assert sorted(files) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert 'safety_prompt="you/dro"' in card.text and "## Evaluation" in card.text and "dro" in card.data.tags
    assert not (tmp_path / "dro/README.md").exists()  # save_model writes it; train() and push_to_hub() do not


def test_bfloat16_train_step_and_guarded_generation(tmp_path):
    model, tokenizer = tiny_model("llama")
    model = model.to(torch.bfloat16)
    trainer = DROTrainer(model, _tiny_config(tmp_path, max_steps=1, variant="elicited", answer_tokens=2), _tiny_data(),
                         processing_class=tokenizer)
    before = trainer.trained_prompt.embeddings
    trainer.train()
    assert trainer.model.prompt_encoder["default"].embedding.weight.dtype == torch.float32  # fp32 master copy
    assert next(model.parameters()).dtype == torch.bfloat16
    prompt = trainer.trained_prompt
    assert torch.isfinite(prompt.embeddings).all() and not torch.equal(prompt.embeddings, before)
    result = generate(model, tokenizer, [[{"role": "user", "content": "Hello"}]], GenerationSettings(max_new_tokens=3),
                      [DRODefense(prompt)])
    assert len(result.responses) == 1


def test_a_prompt_tuning_config_sets_the_starting_prompt(tmp_path):
    from peft import PromptTuningConfig

    model, tokenizer = tiny_model("llama")
    trainer = DROTrainer(model, _tiny_config(tmp_path), _tiny_data(), processing_class=tokenizer,
                         peft_config=PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert trainer.trained_prompt.num_virtual_tokens == 3


def test_data_parallel_ranks_end_with_the_same_prompt(tmp_path):
    from ddp_support import run_on_two_processes

    _, ranks = run_on_two_processes("ddp_dro.py", tmp_path)
    assert not torch.equal(ranks[0]["soft_prompt"], ranks[0]["initial"])


def test_cli_evaluates_on_validation_splits_by_default():
    # An epoch is chosen on this report, so by default it reads validation splits, never a test split (less the
    # training prompts): 100 prompts of each, shuffled with seed 0 (about the cost of the former harmful:test +
    # benign:test, 90 + 125 prompts).
    from hf_sentinel.cli import build_parser

    args = build_parser().parse_args(["train", "dro"])
    assert args.eval_prompts == ["pool:harmful:validation", "benign:validation"]
    assert (args.eval_limit, args.eval_shuffle_seed) == (100, 0)


def test_cli_trains_and_evaluates(tiny_llama_dir, tmp_path):
    from hf_sentinel.cli import main

    harmful, benign = tmp_path / "harmful.jsonl", tmp_path / "benign.jsonl"
    harmful.write_text("".join(json.dumps({"prompt": f"harmful request {i}"}) + "\n" for i in range(4)))
    benign.write_text("".join(json.dumps({"prompt": f"How do I bake bread {i}?"}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    code = main(["train", "dro", "--target", str(tiny_llama_dir), "--harmful", str(harmful), "--benign", str(benign),
                 "--output-dir", str(out), "--variant", "elicited", "--head-cv-folds", "2", "--pca-dim", "2",
                 "--num-train-epochs", "1", "--target-max-new-tokens", "2", "--num-samples", "1",
                 "--head-max-epochs", "10", "--refusal-check", "off", "--ablate", "subspace", "--limit", "3",
                 "--eval-prompts", str(benign), "--eval-limit", "2", "--eval-max-new-tokens", "2", "--disable-tqdm",
                 "true"])
    assert code == 0
    assert (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "w_U=0.0" in card and "3 harmful + 3 harmless" in card
    # the eval set is the benign training file: the 3 prompts trained on are left out, 1 of its 4 is evaluated
    assert json.loads((out / "eval" / "benign.jsonl.json").read_text())["summary"]["n"] == 1


def test_cli_rejects_bad_settings_before_loading_a_model(capsys):
    from hf_sentinel.cli import main

    with pytest.raises(SystemExit):
        main(["train", "dro", "--variant", "magic"])
    assert main(["train", "dro", "--head-cv-folds", "1", "--target", "does-not-matter"]) == 2
    assert "head_cv_folds" in capsys.readouterr().err
    assert main(["train", "dro", "--ablate", "refusal", "harmfulness", "subspace", "--target", "nowhere"]) == 2
    assert "leaves no loss term" in capsys.readouterr().err
