import copy
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from spaces_support import serving
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList, TextIteratorStreamer

import hf_sentinel
from hf_sentinel.cli import main as cli_main
from hf_sentinel.defaults import tiny_model, tiny_tokenizer
from hf_sentinel.generation import GenerationSettings, generate
from hf_sentinel.sentinel import RemoteChatTarget, SentinelConfig, SentinelForCausalLM, split_user_turn, user_turn_end

HELLO = [{"role": "user", "content": "Please explain how encryption works"}]


def _adapter(folder, base_dir, seed=1, hidden=None):
    """A LoRA sentinel with random (non-zero) weights over the tiny base saved in `base_dir`."""
    if hidden:
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = tiny_tokenizer()
        base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


@pytest.fixture
def target(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture
def guarded(target, tiny_llama_dir, tmp_path):
    model, tokenizer = target
    adapter = _adapter(tmp_path / "adapter", tiny_llama_dir)
    return SentinelForCausalLM.from_pretrained(adapter, target=model, target_tokenizer=tokenizer,
                                               max_sentinel_tokens=6)


def test_suffix_goes_inside_the_user_turn_before_the_assistant_header(tiny_llama):
    _, tokenizer = tiny_llama
    text = tokenizer.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    head, tail = split_user_turn(text, user_turn_end(tokenizer))
    assert head.endswith("how encryption works") and tail == "<|im_end|>\n<|im_start|>assistant\n"
    assert split_user_turn("plain text", None) == ("plain text", "")


def test_lora_sentinel_shares_the_target_weights_and_is_off_for_the_target(guarded, target):
    model, tokenizer = target
    assert guarded.sentinel.base_model.model is model  # one copy of the base weights
    [refined], [suffix] = guarded.refine([HELLO])
    assert refined[-1]["content"] == HELLO[0]["content"] + suffix
    assert suffix and 0 < len(guarded.suffix_token_ids(["Hello", "A much longer prompt head"])[1]) <= 6
    # The adapter changes the sentinel's continuation...
    with guarded._sentinel_pass():
        adapted = guarded.sentinel_suffixes(["Hello"])
    assert guarded.sentinel_suffixes(["Hello"]) == adapted
    plain_head = tokenizer("Hello", return_tensors="pt")
    base_continuation = model.generate(**plain_head, max_new_tokens=6, do_sample=False)
    assert tokenizer.decode(base_continuation[0, plain_head["input_ids"].shape[1]:]) != adapted[0]
    # ... while the target, outside the sentinel pass, is the plain model.
    direct = generate(model, tokenizer, [refined], GenerationSettings(max_new_tokens=5)).responses
    assert guarded.chat([HELLO], max_new_tokens=5)[0]["response"] == direct[0]


def test_sentinel_pass_writes_what_greedy_generate_writes(tiny_llama):
    """continue_rows (the sentinel pass) runs the heads' shared opening once and lets each row leave the batch at its
    stop token; its greedy continuations are generate()'s, token for token, the operating point's processor
    included."""
    from hf_sentinel.generation import left_padded
    from hf_sentinel.sentinel.decision import SuffixDecisionProcessor
    from hf_sentinel.sentinel.drafts import SuffixDrafts
    from hf_sentinel.sentinel.modeling import continue_rows

    _, tokenizer = tiny_llama
    model, _ = tiny_model(tie_word_embeddings=False)  # untied: a random model's continuations vary
    torch.manual_seed(1)
    sentinel = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    texts = ["Hi", "Please explain how encryption works", "What is the capital of France?", "Tell me a story",
             "Write a long poem about the sea and the wind over the water"]
    turn_end = user_turn_end(tokenizer)
    heads = [split_user_turn(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                           add_generation_prompt=True), turn_end)[0] for text in texts]
    rows = [tokenizer(head, add_special_tokens=False)["input_ids"] for head in heads]
    assert len({len(row) for row in rows}) > 1  # left padding, under a shared chat opening

    def cut(row, stop):
        return row[:row.index(stop)] if stop in row else row

    free = continue_rows(sentinel, rows, 8, stop_id=-1)
    # A stop token that ends the rows after different numbers of tokens (some never), so rows leave mid-batch.
    stop = next(t for t in free[0] if len({len(cut(row, t)) for row in free}) > 2)
    inputs = left_padded(rows, tokenizer.pad_token_id, "cpu")
    for threshold in (None, 0.0):  # 0.0: the stop token is forbidden at the first step
        def processors():
            return LogitsProcessorList([] if threshold is None else [SuffixDecisionProcessor(stop, threshold)])

        reference = sentinel.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=stop,
                                      pad_token_id=tokenizer.pad_token_id, logits_processor=processors())
        expected = [cut(row, stop) for row in reference[:, inputs["input_ids"].shape[1]:].tolist()]
        assert continue_rows(sentinel, rows, 8, stop, processors()) == expected
        # Drafted from suffixes written before: right, partly right (from the second token on) or wrong, the
        # drafts change only how many forward passes it takes.
        ended = [row + [stop] if len(row) < 8 else row for row in expected]
        partly = [row[:2] + [(t + 1) % 97 for t in row[2:]] for row in ended]
        wrong = [[(t + 3) % 97 for t in row] for row in ended]
        passes = {}
        for name, written in (("none", []), ("right", ended), ("partly", partly), ("wrong", wrong)):
            drafts = SuffixDrafts()
            drafts.add(written)
            calls = []
            hook = sentinel.get_base_model().register_forward_pre_hook(lambda *_: calls.append(1))
            try:
                assert continue_rows(sentinel, rows, 8, stop, processors(), drafts=drafts) == expected
            finally:
                hook.remove()
            passes[name] = len(calls)
        # Every pass writes at least one token per row, a right draft more (a random model repeats its tokens, so
        # its n-grams are ambiguous and even the right suffixes need more than one pass after the prompts).
        assert passes["right"] < passes["none"] and max(passes.values()) == passes["none"], passes
        # A fresh memory learns from the call: the second call drafts every suffix of more than one token.
        drafts = SuffixDrafts()
        assert continue_rows(sentinel, rows, 8, stop, processors(), drafts=drafts) == expected
        assert set(drafts.counts) == {tuple(row) for row in ended if len(row) > 1}
    torch.manual_seed(0)
    sampled = continue_rows(sentinel, rows, 8, stop, temperature=1.0)
    torch.manual_seed(0)
    assert continue_rows(sentinel, rows, 8, stop, temperature=1.0) == sampled
    assert all(len(row) <= 8 and stop not in row for row in sampled)


def test_the_target_continues_the_sentinel_pass_below_its_adapter(tmp_path):
    """A LoRA sentinel on the top layer: the target's batches start from the keys and values the sentinel pass
    computed for each prompt head below that layer, and answer what they answer without them, in batches that mix
    the sentinel pass's rows differently, with chat histories, a stacked defense after it, and a rewrite that
    changes the heads (which falls back to the whole prefill)."""
    from hf_sentinel.defenses import SuffixDefense, SystemPromptDefense
    from hf_sentinel.generation import left_padded, positions_from_mask
    from hf_sentinel.sentinel import SentinelDefense

    model, tokenizer = tiny_model(tie_word_embeddings=False)  # untied: a random model's continuations vary
    torch.manual_seed(3)
    get_peft_model(tiny_model(tie_word_embeddings=False)[0],
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
                              init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    # Heads in sentinel passes of 2 (sorted by length): the states of three passes, continued in target batches of 2.
    sentinel = SentinelForCausalLM.from_pretrained(tmp_path / "adapter", target=model, target_tokenizer=tokenizer,
                                                   max_sentinel_tokens=6, sentinel_batch_size=2)
    chat = [{"role": "user", "content": "I am planning a trip."}, {"role": "assistant", "content": "Lovely!"}]
    conversations = [[{"role": "user", "content": text}] for text in
                     ("Hi", "Please explain how encryption works", "Tell me a story", "What is 2 plus 2?")]
    conversations += [chat + [{"role": "user", "content": "Where should I go in spring?"}]]
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    rows_in_target_prefill = []
    hook = model.get_decoder().layers[0].register_forward_pre_hook(
        lambda _, args, kwargs: rows_in_target_prefill.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    try:
        for stack in ([], [SuffixDefense("Be careful.")], [SystemPromptDefense("Be nice.")]):
            answers, prefills = {}, {}
            for reuse in (False, True):
                sentinel.config.reuse_prompt_states = reuse
                rows_in_target_prefill.clear()
                result = generate(model, tokenizer, conversations, settings, [SentinelDefense(sentinel), *stack])
                answers[reuse], prefills[reuse] = result.token_ids, sum(rows_in_target_prefill)
                assert sentinel.prompt_states is None if not reuse else sentinel.prompt_states.first_adapted == 1
            assert answers[True] == answers[False]
            assert any(answers[True])
            if stack and isinstance(stack[0], SystemPromptDefense):  # the heads changed after the sentinel pass
                assert prefills[True] == prefills[False]
            else:  # the heads' columns ran through layer 0 once, in the sentinel pass
                assert prefills[True] < prefills[False]
    finally:
        hook.remove()
    # The passes of 2 write what one pass over every head writes.
    heads = [split_user_turn(tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                             user_turn_end(tokenizer))[0] for c in conversations]
    in_twos = sentinel.suffix_token_ids(heads)
    sentinel.config.sentinel_batch_size = 32
    assert sentinel.suffix_token_ids(heads) == in_twos
    with pytest.raises(ValueError, match="sentinel_batch_size"):
        SentinelConfig(sentinel_batch_size=0)
    # generate() on token ids (the transformers pipeline's path) continues them too.
    prompts = left_padded([tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"]
                           for c in conversations], tokenizer.pad_token_id, "cpu")
    outputs, continued_batches = {}, []
    states = sentinel.continue_prompt_states
    sentinel.continue_prompt_states = lambda *args: continued_batches.append(out := states(*args)) or out
    for reuse in (False, True):
        sentinel.config.reuse_prompt_states = reuse
        outputs[reuse] = sentinel.generate(**prompts, max_new_tokens=8, do_sample=False)
    del sentinel.continue_prompt_states
    assert torch.equal(outputs[True], outputs[False]) and [c is None for c in continued_batches] == [True, False]
    # The next-token logits of a batch of refined prompts and one left as sent (its rest: the end of the turn
    # alone): from the continued states as from the whole prompts.
    refined, suffixes = sentinel.refine(conversations)
    assert all(suffixes)
    inputs = left_padded([tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"]
                          for c in [*refined[:-1], conversations[-1]]], tokenizer.pad_token_id, "cpu")
    continued = sentinel.continue_prompt_states(model, inputs)
    cached = continued["past_key_values"].get_seq_length()
    with torch.no_grad():
        expected = model(**inputs, position_ids=positions_from_mask(inputs["attention_mask"])).logits[:, -1]
        logits = model(input_ids=continued["input_ids"][:, cached:], attention_mask=continued["attention_mask"],
                       position_ids=continued["position_ids"][:, cached:],
                       past_key_values=continued["past_key_values"]).logits[:, -1]
    assert cached > 10 and torch.allclose(logits, expected, atol=1e-5), (logits - expected).abs().max()
    # The target's layers below the adapter computing something else now: nothing is continued.
    with torch.no_grad():
        model.get_decoder().layers[0].mlp.up_proj.weight.mul_(1.0)  # an in-place change, the same values
    assert sentinel.continue_prompt_states(model, inputs) is None


def test_generate_returns_the_original_prompt_then_the_answer(guarded, target):
    _, tokenizer = target
    inputs = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = guarded.generate(**inputs, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    prompt_len = inputs["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :prompt_len], inputs["input_ids"])
    answer = tokenizer.decode(out.sequences[0, prompt_len:], skip_special_tokens=True).strip()
    assert answer == guarded.chat([HELLO], max_new_tokens=4)[0]["response"]
    assert out.sentinel_suffixes == guarded.refine([HELLO])[1]


def test_save_load_round_trip_auto_classes_and_stock_pipeline(guarded, target, tiny_llama_dir, tmp_path):
    model, tokenizer = target
    guarded.config.target_name_or_path = str(tiny_llama_dir)
    folder = tmp_path / "saved"
    guarded.save_pretrained(folder)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"config.json", "sentinel/adapter_model.safetensors", "sentinel/adapter_config.json", "README.md",
            "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sentinel"
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "library_name: hf-sentinel" in card

    loaded = AutoModelForCausalLM.from_pretrained(folder)  # target loaded from the config's path
    assert isinstance(loaded, SentinelForCausalLM) and loaded.config.max_sentinel_tokens == 6
    assert loaded.refine([HELLO])[1] == guarded.refine([HELLO])[1]

    pipe = transformers.pipeline("text-generation", model=str(folder))
    answer = pipe(HELLO, max_new_tokens=4, do_sample=False)[0]["generated_text"][-1]["content"].strip()
    assert answer == guarded.chat([HELLO], max_new_tokens=4)[0]["response"]


def test_push_to_hub_uploads_the_folder(guarded, monkeypatch, tiny_llama_dir):
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", repo_id) and
                        type("Url", (), {"repo_id": repo_id})())
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: calls.update(
        commit_repo=repo_id, files=sorted(op.path_in_repo for op in operations)))
    guarded.config.target_name_or_path = str(tiny_llama_dir)
    guarded.push_to_hub("org/sentinel-tiny", token="hf_fake")
    assert calls["commit_repo"] == "org/sentinel-tiny"
    assert {"config.json", "README.md", "sentinel/adapter_model.safetensors"} <= set(calls["files"])


def test_sentinel_with_another_tokenizer_composes_at_text_level(target, tmp_path):
    model, tokenizer = target
    other_tokenizer = tiny_tokenizer(vocab_size=290)
    sentinel_model, _ = tiny_model("gpt2", seed=3, tokenizer=other_tokenizer)
    sentinel_model.save_pretrained(tmp_path / "gpt2-sentinel")
    other_tokenizer.save_pretrained(tmp_path / "gpt2-sentinel")
    guarded = SentinelForCausalLM.from_pretrained(tmp_path / "gpt2-sentinel", target=model, target_tokenizer=tokenizer,
                                                  max_sentinel_tokens=5)
    assert guarded.config.sentinel_kind == "model" and len(guarded.sentinel_tokenizer) != len(tokenizer)
    [refined], [suffix] = guarded.refine([HELLO])
    assert refined[-1]["content"] == HELLO[0]["content"] + suffix
    assert all(len(ids) <= 5 for ids in guarded.suffix_token_ids(["Hi", "Tell me about the sea"]))


def test_bad_compositions_fail_clearly(target, tiny_llama_dir, tmp_path):
    model, tokenizer = target
    wrong = _adapter(tmp_path / "wide", None, hidden=64)
    with pytest.raises(ValueError, match="does not fit this target.*expects 64 inputs"):
        SentinelForCausalLM.from_pretrained(wrong, target=model, target_tokenizer=tokenizer)
    with pytest.raises(ValueError, match="over the sentinel budget of 30"):
        SentinelForCausalLM.from_pretrained(_adapter(tmp_path / "a", tiny_llama_dir), target=model,
                                            target_tokenizer=tokenizer, max_sentinel_tokens=40)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SentinelForCausalLM.from_pretrained(tmp_path / "missing", target=model, target_tokenizer=tokenizer)
    guarded = SentinelForCausalLM.from_pretrained(_adapter(tmp_path / "b", tiny_llama_dir), target=model,
                                                  target_tokenizer=tokenizer)
    with pytest.raises(ValueError, match="non-empty user message"):
        guarded.refine([[{"role": "user", "content": "  "}]])


def test_remote_target_errors_do_not_hang():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        remote = RemoteChatTarget(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer within 0.5 s"):
            remote.chat([HELLO])
        assert time.monotonic() - start < 5
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ConnectionError, match="Cannot reach target endpoint"):
        RemoteChatTarget(f"http://127.0.0.1:{port}/v1", timeout=2).chat([HELLO])
    with pytest.raises(ValueError, match="must be an http"):
        RemoteChatTarget("localhost:8000")


def test_hf_sentinel_pipeline_is_transformers_pipeline_without_defenses(target, guarded, tmp_path, tiny_llama_dir):
    model, tokenizer = target
    plain = hf_sentinel.pipeline("text-generation", model=model, tokenizer=tokenizer)
    assert type(plain) is transformers.TextGenerationPipeline

    adapter = _adapter(tmp_path / "adapter", tiny_llama_dir)
    pipe = hf_sentinel.pipeline("text-generation", model=model, tokenizer=tokenizer, sentinel=str(adapter))
    out = pipe(HELLO, max_new_tokens=5, do_sample=False)[0]
    assert out["generated_text"][:-1] == HELLO  # the user's own prompt; the suffix is reported beside it
    expected = SentinelForCausalLM.from_pretrained(adapter, target=model, target_tokenizer=tokenizer).chat(
        [HELLO], max_new_tokens=5)[0]
    assert out["sentinel_suffix"] == expected["sentinel_suffix"]
    assert out["generated_text"][-1]["content"].strip() == expected["response"]

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = threading.Thread(target=pipe, args=(HELLO,),
                              kwargs=dict(max_new_tokens=5, do_sample=False, streamer=streamer))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed.strip() == expected["response"]


@pytest.fixture
def server(tiny_llama_dir, tmp_path):
    """The real `hf-sentinel serve` process on loopback, serving the tiny target undefended."""
    with serving(tiny_llama_dir, tmp_path / "serve.log") as running:
        yield running.url


def test_server_answers_openai_chat_completions_and_guards_a_remote_target(server, target, tiny_llama_dir, tmp_path):
    model, tokenizer = target
    reply = httpx.post(f"{server}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 5}, timeout=30)
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == generate(
        model, tokenizer, [HELLO], GenerationSettings(max_new_tokens=5)).responses[0]
    bad = httpx.post(f"{server}/v1/chat/completions", json={"messages": [{"role": "user", "content": " "}]},
                     timeout=30)
    assert bad.status_code == 400 and "empty" in bad.json()["error"]["message"]

    # Black-box path: the sentinel runs here on its own base, the target answers behind the server.
    adapter = _adapter(tmp_path / "adapter", tiny_llama_dir)
    remote = RemoteChatTarget(f"{server}/v1", timeout=30)
    guarded = SentinelForCausalLM.from_pretrained(adapter, target=remote,
                                                  sentinel_base_name_or_path=str(tiny_llama_dir))
    [result] = guarded.chat([HELLO], max_new_tokens=5)
    refined = [{"role": "user", "content": HELLO[0]["content"] + result["sentinel_suffix"]}]
    assert result["sentinel_suffix"]
    expected = generate(model, tokenizer, [refined], GenerationSettings(max_new_tokens=5)).responses[0]
    assert result["response"] == expected

    # The eval CLI drives the same path: remote target, local sentinel defense.
    saved = tmp_path / "saved"
    guarded.save_pretrained(saved)
    out = tmp_path / "remote.json"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": HELLO[0]["content"]}) + "\n")
    assert cli_main(["eval", "--prompts", str(prompts), "--target", f"{server}/v1", "--defense",
                                 f"sentinel:{saved}", "--max-new-tokens", "5", "--output", str(out)]) == 0
    record = json.loads(out.read_text())["records"][0]
    assert record["sentinel_suffix"] == result["sentinel_suffix"] and record["response"] == result["response"]


def test_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="sentinel_kind='prefix'"):
        SentinelConfig(sentinel_kind="prefix")


@pytest.mark.integration
def test_eval_with_a_sentinel_defense_on_the_embedded_target(default_target, tmp_path, capsys):
    model, tokenizer = default_target
    adapter = tmp_path / "untrained"
    # get_peft_model injects LoRA layers into the model it is given: a copy, so the session's target stays plain.
    get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    out = tmp_path / "sentinel.json"
    code = cli_main(["eval", "--prompts", "harmful:test", "--limit", "4", "--defense", f"sentinel:{adapter}",
                                 "--max-new-tokens", "8", "--output", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["summary"]["defense"] == f"sentinel:{adapter}"
    assert all("sentinel_suffix" in r for r in result["records"])
    assert Path(adapter, "adapter_config.json").is_file()
    assert not hasattr(model, "peft_config") and not any(type(m).__name__.startswith("Lora") for m in model.modules())


@pytest.mark.integration
def test_shipped_sentinel_appends_its_instruction_to_harmful_requests_only(default_target):
    from hf_sentinel.data import load_prompts
    from hf_sentinel.defaults import pretrained_path
    from hf_sentinel.defenses import DEFAULT_SAFETY_SUFFIX
    from hf_sentinel.generation import to_conversation

    model, tokenizer = default_target
    # The LoRA sentinel is injected into the target it shares: a copy, so the session's target stays plain.
    sentinel = SentinelForCausalLM.from_pretrained(pretrained_path("sentinel"), target=copy.deepcopy(model),
                                                   target_tokenizer=tokenizer)
    harmful = [to_conversation(p) for p in load_prompts("harmful:test", limit=10, seed=1)["prompt"]]
    benign = [to_conversation(r["prompt"], r["history"]) for r in load_prompts("benign:test", limit=10, seed=1)]
    _, harmful_suffixes = sentinel.refine(harmful)
    _, benign_suffixes = sentinel.refine(benign)
    # On the whole test splits the shipped sentinel appends to 69 of 90 harmful requests and 4 of 125 benign ones
    # (the own-test footnote of its bench, 2026-12-04); what it appends is the instruction it learned.
    assert sum(bool(s.strip()) for s in harmful_suffixes) >= 5
    assert sum(bool(s.strip()) for s in benign_suffixes) <= 1
    assert all(DEFAULT_SAFETY_SUFFIX.startswith(s.strip()[:40]) for s in harmful_suffixes if s.strip())
