"""``hf-sentinel serve`` in process: HTTP 400 in OpenAI's error shape before the model is reached; a failure inside
generation is a 500 for its own request only; streaming, batching, finish reasons, usage, stop strings and API keys.
``test_server_clients.py`` drives a real server process with the official ``openai`` client."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import LogitsProcessor

from hf_sentinel.defaults import tiny_model, tiny_tokenizer
from hf_sentinel.defenses import Defense, describe
from hf_sentinel.generation import GenerationSettings, generate
from hf_sentinel.server import MAX_SEED, create_app

HELLO = [{"role": "user", "content": "Please explain how encryption works"}]


class Spy(Defense):
    """Counts the conversations that reach generation; fails on a user message that says 'boom'."""

    def __init__(self):
        self.seen = 0

    def rewrite(self, conversations, extras):
        self.seen += len(conversations)
        if any("boom" in conv[-1]["content"] for conv in conversations):
            raise RuntimeError("the defense broke")
        return conversations


@pytest.fixture
def spy():
    return Spy()


@pytest.fixture
def client(tiny_llama, spy):
    model, tokenizer = tiny_llama
    return TestClient(create_app(model, tokenizer, [spy], max_prompt_tokens=100, max_messages=4))


def _messages(count: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(count - 1, -1, -1)]


@pytest.mark.parametrize("body, param, message", [
    ({"messages": [{"role": "tool", "content": "hi"}]}, "messages[0].role",
     r"messages\[0\]\.role 'tool' is not supported; use one of system, user, assistant\."),
    ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "x"}, *HELLO]},
     "messages[1].role", "'developer' is not supported"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content", r"messages\[0\]\.content is empty"),
    ({"messages": [{"role": "system", "content": ""}, *HELLO]}, "messages[0].content", "is empty"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content",
     r"Invalid request: messages\[0\]\.content: Input should be a valid string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "messages[0].content",
     "Input should be a valid string"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role", r"messages\[0\]\.role: Field required"),
    ({"messages": "hi"}, "messages", "messages: Input should be a valid list"),
    ({}, "messages", "messages: Field required"),
    ({"messages": []}, "messages", "messages is empty"),
    ({"messages": _messages(5)}, "messages", r"5 messages is more than this server accepts \(4\)"),
    ({"messages": [*HELLO, {"role": "assistant", "content": "Sure"}]}, "messages[1].role",
     "The last message must come from the user, got role 'assistant'"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, "messages",
     r"The conversation is 256 tokens long \(with the chat template\), over this server's limit of 100\. Send "
     r"fewer or shorter messages\.$"),
    ({"messages": HELLO, "max_tokens": 2040}, "messages",
     r"is 40 tokens long .*over the 8 that the model's context of 2048 tokens leaves next to max_tokens=2040\. "
     r"Send fewer or shorter messages, or ask for fewer new tokens\."),
    ({"messages": HELLO, "max_tokens": 2048}, "max_tokens", "max_tokens=2048 leaves no room for a prompt"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens", r"max_tokens must be between 1 and 2048, got 0"),
    ({"messages": HELLO, "max_completion_tokens": 5000}, "max_completion_tokens", "got 5000"),
    ({"messages": HELLO, "top_p": 0}, "top_p", r"top_p must be in \(0, 1\], got 0.0"),
    ({"messages": HELLO, "top_p": 1.5}, "top_p", r"top_p must be in \(0, 1\], got 1.5"),
    ({"messages": HELLO, "temperature": -0.5}, "temperature", "temperature must be >= 0"),
    ({"messages": HELLO, "seed": MAX_SEED + 1}, "seed", "seed must be between 0 and"),
    ({"messages": HELLO, "n": 2}, "n", "n=2 is not supported: this server gives one answer per request"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop",
     r"^stop has 5 strings, more than the 4 allowed; send a string or a list of at most 4 strings, e\.g\. "
     r"\"stop\": \[\"\\n\\n\", \"User:\"\]\.$"),
    ({"messages": HELLO, "stop": ""}, "stop", "^stop is empty; every stop string needs at least one character"),
    ({"messages": HELLO, "stop": ["\n", ""]}, "stop[1]", r"^stop\[1\] is empty"),
    ({"messages": HELLO, "stop": 5}, "stop", r"^stop must be a string or a list of strings, got 5; send a string"),
    ({"messages": HELLO, "stop": {"text": "x"}}, "stop", r"got \{\"text\": \"x\"\}; send"),
    ({"messages": HELLO, "stop": ["\n", None]}, "stop[1]", r"^stop\[1\] must be a string, got null; send"),
])
def test_bad_requests_get_400_in_openai_shape_and_never_reach_the_model(client, spy, body, param, message):
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] is None
    assert re.search(message, error["message"]), error["message"]
    assert spy.seen == 0


def test_a_body_that_is_not_json_is_a_400(client, spy):
    reply = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("Invalid request: the body is not valid JSON")
    assert client.get("/v1/nothing-here").json()["error"]["message"] == "Not Found"
    assert spy.seen == 0


def test_valid_requests_at_the_limits_are_answered(client, spy, tiny_llama):
    model, tokenizer = tiny_llama
    reply = client.post("/v1/chat/completions", json={"messages": _messages(4), "max_tokens": 3, "top_p": 1.0,
                                                      "temperature": 0, "seed": MAX_SEED})
    assert reply.status_code == 200, reply.text
    expected = generate(model, tokenizer, [_messages(4)], GenerationSettings(max_new_tokens=3)).responses[0]
    assert reply.json()["choices"][0]["message"]["content"] == expected and spy.seen == 1


def test_an_error_inside_generation_is_a_500_with_a_message_and_the_server_keeps_serving(client, spy):
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "boom"}],
                                                      "max_tokens": 2})
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "server_error"
    assert error["message"].startswith("Generation failed: RuntimeError: the defense broke.")
    assert client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}).status_code == 200


def test_create_app_rejects_limits_and_models_it_cannot_serve(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match=r"max_prompt_tokens \(--max-prompt-tokens\) must be at least 1, got 0"):
        create_app(model, tokenizer, max_prompt_tokens=0)
    with pytest.raises(ValueError, match=r"max_messages \(--max-messages\) must be at least 1, got 0"):
        create_app(model, tokenizer, max_messages=0)
    plain = tiny_tokenizer()
    plain.chat_template = None
    with pytest.raises(ValueError, match="has no chat template, so it cannot serve chat completions"):
        create_app(tiny_model(tokenizer=plain)[0], plain)


# ------------------------------------------------------------------------------ streaming, batching, honest answers


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """A tiny target with untied embeddings (its answers are non-empty and differ by prompt)."""
    from spaces_support import tiny_target_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_target_dir(tmp_path_factory.mktemp("varied"))
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _events(reply) -> list:
    """The JSON payloads of a server-sent event stream, checking its framing and the closing [DONE]."""
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    blocks = reply.text.split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""], blocks[-3:]
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-2]]


def _ask(client, content: str, **fields):
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **fields})


def test_a_stream_adds_up_to_the_answer_with_role_finish_reason_and_usage(varied):
    client = TestClient(create_app(*varied))
    whole = _ask(client, "Tell me about rivers", max_tokens=6).json()
    events = _events(_ask(client, "Tell me about rivers", max_tokens=6, stream=True,
                          stream_options={"include_usage": True}))
    chunks, usage = events[:-1], events[-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in events)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == whole["choices"][0]["message"]["content"] != ""
    assert [c["choices"][0]["finish_reason"] for c in chunks].count(None) == len(chunks) - 1
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert whole["usage"]["total_tokens"] == whole["usage"]["prompt_tokens"] + whole["usage"]["completion_tokens"]
    # Without include_usage, no usage anywhere (as OpenAI).
    assert all("usage" not in c for c in _events(_ask(client, "Hi", max_tokens=2, stream=True)))


def test_finish_reason_says_length_when_max_tokens_ran_out_and_stop_otherwise(varied):
    client = TestClient(create_app(*varied))
    short = _ask(client, "Tell me about rivers", max_tokens=3).json()
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 3
    model, tokenizer = varied
    result = generate(model, tokenizer, [[{"role": "user", "content": "Tell me about rivers"}]],
                      GenerationSettings(max_new_tokens=64))
    expected = "length" if len(result.token_ids[0]) == 64 else "stop"
    reply = _ask(client, "Tell me about rivers", max_tokens=64).json()
    assert reply["choices"][0]["finish_reason"] == expected == result.finish_reasons[0]
    assert reply["usage"]["completion_tokens"] == len(result.token_ids[0])
    assert reply["usage"]["prompt_tokens"] == result.prompt_tokens[0] == len(tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about rivers"}], add_generation_prompt=True, tokenize=True)["input_ids"])


PROMPTS = ["Tell me about rivers", "How do plants grow?", "Write a haiku about snow",
           "What is the capital of France and why?", "Hi", "Explain a loop in Python to a child please"]


def _concurrently(client, bodies: list[dict]) -> list:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: client.post("/v1/chat/completions", json=body), bodies))


def test_concurrent_requests_are_generated_as_one_batch_each_with_its_own_limit(varied):
    model, tokenizer = varied
    app = create_app(model, tokenizer, batch_wait_ms=1000)
    limits = [2, 5, 3, 6, 4, 5]
    replies = _concurrently(TestClient(app), [{"messages": [{"role": "user", "content": p}], "max_tokens": n}
                                              for p, n in zip(PROMPTS, limits)])
    assert list(app.state.worker.batch_sizes) == [6]
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    # What the same conversations get as one batch of generate(): each row stopped at its own limit.
    expected = generate(model, tokenizer, conversations, GenerationSettings(max_new_tokens=6, batch_size=6),
                        max_new_tokens=limits)
    for i, reply in enumerate(replies):
        body = reply.json()
        assert body["choices"][0]["message"]["content"] == expected.responses[i]
        assert body["usage"]["completion_tokens"] == len(expected.token_ids[i]) <= limits[i]
        assert body["choices"][0]["finish_reason"] == expected.finish_reasons[i]


def test_requests_batch_by_how_they_decode_and_a_seeded_sampled_one_repeats_alone(varied):
    app = create_app(*varied, batch_wait_ms=1000)
    client = TestClient(app)
    bodies = [*({"messages": [{"role": "user", "content": p}], "max_tokens": 3} for p in PROMPTS[:3]),
              {"messages": HELLO, "max_tokens": 4, "temperature": 0.8, "seed": 7},
              {"messages": HELLO, "max_tokens": 4, "temperature": 0.8, "top_p": 0.9},
              {"messages": HELLO, "max_tokens": 4, "temperature": 0.8, "top_p": 0.9}]
    replies = _concurrently(client, bodies)
    assert sorted(app.state.worker.batch_sizes) == [1, 2, 3]  # greedy / same sampling / seeded alone
    seeded = replies[3].json()["choices"][0]["message"]["content"]
    assert client.post("/v1/chat/completions", json=bodies[3]).json()["choices"][0]["message"]["content"] == seeded


def test_a_request_that_fails_in_a_batch_fails_alone(varied):
    spy = Spy()
    app = create_app(*varied, [spy], batch_wait_ms=1000)
    replies = _concurrently(TestClient(app), [{"messages": [{"role": "user", "content": c}], "max_tokens": 2}
                                              for c in ("Hi", "boom", "How do plants grow?")])
    assert [r.status_code for r in replies] == [200, 500, 200]
    assert replies[1].json()["error"]["message"].startswith("Generation failed: RuntimeError: the defense broke.")
    assert list(app.state.worker.batch_sizes) == [3, 1, 1, 1]  # the batch, then each request alone


class Censor(Defense):
    """Replaces every answer, as a red flag that fired late would: the stream must retract what it showed."""

    spec = "censor"

    def finalize(self, responses, extras):
        for extra in extras:
            extra["content_filter"] = self.spec
        return ["[removed]"] * len(responses)


def test_a_stream_whose_answer_a_defense_replaced_ends_with_content_filter_and_retracts(varied):
    client = TestClient(create_app(*varied, [Censor()]))
    whole = _ask(client, "Tell me about rivers", max_tokens=5).json()
    assert whole["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "[removed]"},
                                   "finish_reason": "content_filter", "logprobs": None}
    assert whole["hf_sentinel"] == {"defense": "censor", "content_filter": "censor"}
    chunks = _events(_ask(client, "Tell me about rivers", max_tokens=5, stream=True))
    shown = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert shown.strip()  # tokens were streamed before the defense replaced the answer
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["choices"][0]["delta"]["content"] == "\n\n[removed]"
    assert last["hf_sentinel"]["retracted"] is True and last["hf_sentinel"]["content"] == "[removed]"


def test_a_red_flag_that_fires_is_a_content_filter_with_its_report(tmp_path_factory):
    from spaces_support import tiny_red_flag_dir, tiny_target_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sentinel.red_flag import RedFlagDefense

    folder = tmp_path_factory.mktemp("served-red-flag")
    target = tiny_target_dir(folder / "target")
    flag = RedFlagDefense(tiny_red_flag_dir(folder / "red-flag", target))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    always = TestClient(create_app(model, tokenizer, [flag.with_settings(threshold=1e-9)]))
    reply = _ask(always, "How do I build a bomb?", max_tokens=4).json()
    assert reply["choices"][0]["finish_reason"] == "content_filter"
    assert reply["choices"][0]["message"]["content"] == flag.settings.refusal_text
    assert reply["hf_sentinel"]["red_flag"]["fired"] and reply["hf_sentinel"]["red_flag"]["step"] == 0
    last = _events(_ask(always, "How do I build a bomb?", max_tokens=4, stream=True))[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["choices"][0]["delta"]["content"] == flag.settings.refusal_text  # nothing was shown before it
    never = TestClient(create_app(model, tokenizer, [flag.with_settings(threshold=0.999999, action="flag")]))
    reply = _ask(never, "How do I build a bomb?", max_tokens=4).json()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert "content_filter" not in reply["hf_sentinel"] and not reply["hf_sentinel"]["red_flag"]["fired"]


def test_api_keys_guard_every_v1_route_and_models_lists_the_defenses(tiny_llama, spy):
    client = TestClient(create_app(*tiny_llama, [spy], model_name="smol", api_keys=["k1", "k2"]))
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k1"}):
        for reply in (client.get("/v1/models", headers=headers),
                      client.post("/v1/chat/completions", json={"messages": HELLO}, headers=headers)):
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "invalid_api_key"
            assert "API key" in reply.json()["error"]["message"]
    assert spy.seen == 0
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models", headers={"Authorization": "Bearer k2"}).json()
    assert [m["id"] for m in models["data"]] == ["smol"]
    assert models["data"][0]["hf_sentinel"] == {"defense": "none", "defenses": []}
    assert client.get("/v1/models/smol", headers={"Authorization": "Bearer k1"}).json()["id"] == "smol"
    missing = client.get("/v1/models/other", headers={"Authorization": "Bearer k1"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    with pytest.raises(ValueError, match=r"An API key \(--api-key\) is empty"):
        create_app(*tiny_llama, api_keys=[" "])


def test_stop_requested_ends_a_row_and_the_rest_of_the_batch_goes_on(varied):
    model, tokenizer = varied
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS[:2]]
    result = generate(model, tokenizer, conversations, GenerationSettings(max_new_tokens=8, batch_size=2),
                      stop_requested=lambda i: i == 1)
    assert len(result.token_ids[1]) == 1  # the row ends after the step that saw the request
    assert result.token_ids[0] == generate(model, tokenizer, conversations,
                                           GenerationSettings(max_new_tokens=8, batch_size=2)).token_ids[0]


def test_every_defense_kind_streams_and_batches_as_generate_answers(tmp_path_factory):
    """Sentinel (suffix decided before the first token), DRO soft prompt, MART adapter and red flag, one at a time
    and stacked: a stream adds up to the non-streamed answer, and a batch answers as generate() does."""
    from peft import LoraConfig, get_peft_model
    from spaces_support import tiny_artifact_dirs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sentinel.defenses import parse_defense
    from hf_sentinel.sentinel import SentinelDefense

    dirs = tiny_artifact_dirs(tmp_path_factory.mktemp("served-defenses"))
    model = AutoModelForCausalLM.from_pretrained(dirs["target"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(dirs["target"])
    torch.manual_seed(2)
    mart = dirs["root"] / "mart"
    get_peft_model(AutoModelForCausalLM.from_pretrained(dirs["target"]),
                   LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(mart)
    sentinel = SentinelDefense.from_spec(str(dirs["sentinel"]), target=model, target_tokenizer=tokenizer)
    dro, red_flag = parse_defense(f"dro:{dirs['dro']}"), parse_defense(f"red-flag:{dirs['red_flag']}")
    stacks = [[sentinel], [dro], [parse_defense(f"mart:{mart}")], [red_flag], [dro, sentinel, red_flag]]
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    for defenses in stacks:
        app = create_app(model, tokenizer, defenses, batch_wait_ms=1000)
        client = TestClient(app)
        replies = _concurrently(client, [{"messages": c, "max_tokens": 4} for c in conversations])
        expected = generate(model, tokenizer, conversations, GenerationSettings(max_new_tokens=4, batch_size=3),
                            defenses)
        assert list(app.state.worker.batch_sizes) == [3], describe(defenses)
        assert [r.json()["choices"][0]["message"]["content"] for r in replies] == expected.responses
        chunks = _events(client.post("/v1/chat/completions", json={"messages": conversations[0], "max_tokens": 4,
                                                                   "stream": True}))
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        alone = client.post("/v1/chat/completions", json={"messages": conversations[0], "max_tokens": 4}).json()
        assert streamed.strip() == alone["choices"][0]["message"]["content"], describe(defenses)
        if sentinel in defenses:  # the suffix is reported before the answer's first token
            assert chunks[0]["hf_sentinel"]["sentinel_suffix"] == alone["hf_sentinel"]["sentinel_suffix"] != ""
        if red_flag in defenses:
            assert chunks[-1]["hf_sentinel"]["red_flag"] == alone["hf_sentinel"]["red_flag"]


# ------------------------------------------------------------------------------------------------- stop strings


class Steps(Defense):
    """Counts the decoding steps of each batch (its logits processor runs once a step), changing nothing."""

    spec = "steps"

    def __init__(self):
        self.counts: list[int] = []

    def logits_processors(self):
        counts = self.counts
        counts.append(0)

        class Count(LogitsProcessor):
            def __call__(self, input_ids, scores):
                counts[-1] += 1
                return scores

        return [Count()]


def _stop_in(tokenizer, ids: list[int]) -> tuple[str, int]:
    """A stop string that a greedy answer reaches over three of its tokens, ending inside the third (a stream
    must hold its beginning back; the token it ends in counts), and how many tokens the answer has up to that one."""
    pieces = [tokenizer.decode([i]) for i in ids]
    for j in range(1, len(ids) - 2):
        three = pieces[j:j + 3]
        if all(p.isprintable() and "\ufffd" not in p for p in three) and len(three[2]) > 1:
            stop = "".join(three)[:-1]
            if stop not in tokenizer.decode(ids[:j + 2]):
                return stop, j + 3
    raise AssertionError(f"no three printable tokens in a row in {pieces}")


PLANTS = [{"role": "user", "content": PROMPTS[1]}]


@pytest.fixture(scope="module")
def plants(varied):
    """The tiny target's greedy answer to PLANTS (32 tokens, no stop string), a stop string inside it and the
    tokens up to where that ends."""
    model, tokenizer = varied
    free = generate(model, tokenizer, [PLANTS], GenerationSettings(max_new_tokens=32))
    assert len(free.token_ids[0]) == 32  # the answer runs on: a row that ends at the stop string ends early
    return free.responses[0], *_stop_in(tokenizer, free.token_ids[0])


def test_a_stop_string_cuts_the_answer_before_it_and_ends_its_row(varied, plants):
    answer, stop, through = plants
    steps = Steps()
    client = TestClient(create_app(*varied, [steps]))
    for request_stop in (stop, [stop], ["never in the answer", stop]):
        reply = client.post("/v1/chat/completions", json={"messages": PLANTS, "max_tokens": 32,
                                                          "stop": request_stop}).json()
        [choice] = reply["choices"]
        assert choice["message"]["content"] == answer[:answer.index(stop)].strip() != ""
        assert choice["finish_reason"] == "stop"
        assert reply["usage"]["completion_tokens"] == through < 32
    # The row stopped generating right after the stop string (one step later: its end takes effect at the next
    # step), not at max_tokens.
    assert steps.counts == [through + 1] * 3
    # Of a list, the stop string that comes first in the answer ends it.
    early = answer[answer.index(stop) - 2:answer.index(stop)]
    reply = client.post("/v1/chat/completions", json={"messages": PLANTS, "max_tokens": 32,
                                                      "stop": [stop, early]}).json()
    assert reply["choices"][0]["message"]["content"] == answer[:answer.index(early)].strip()


def test_a_stream_never_sends_a_stop_string_and_holds_back_what_may_begin_one(varied, plants):
    answer, stop, through = plants
    client = TestClient(create_app(*varied))
    body = {"messages": PLANTS, "max_tokens": 32, "stop": ["never in the answer", stop]}
    whole = client.post("/v1/chat/completions", json=body).json()
    events = _events(client.post("/v1/chat/completions", json={**body, "stream": True,
                                                                "stream_options": {"include_usage": True}}))
    chunks, usage = events[:-1], events[-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    # Exactly the text before the stop string: the stop string's first tokens, streamed before it was complete,
    # were held back.
    assert text == answer[:answer.index(stop)] and text.strip() == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]
    assert usage["usage"] == whole["usage"] and usage["usage"]["completion_tokens"] == through

    # An answer that ends (here at max_tokens) while a tail waits in case it begins a stop string: the last chunk
    # sends the tail.
    short = {**body, "max_tokens": through - 2}
    whole = client.post("/v1/chat/completions", json=short).json()
    chunks = _events(client.post("/v1/chat/completions", json={**short, "stream": True}))
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"] == "length"
    assert stop.startswith(chunks[-1]["choices"][0]["delta"]["content"])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == whole["choices"][0]["message"]["content"] == answer[:len(text)].strip()


def test_rows_of_one_batch_end_at_their_own_stop_strings(varied, plants):
    model, tokenizer = varied
    _, stop, through = plants
    prompts = [PROMPTS[1], PROMPTS[3], PROMPTS[0], PROMPTS[4]]
    stops = [stop, ["uns", " b3"], "Safe", None]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    free = generate(model, tokenizer, conversations, GenerationSettings(max_new_tokens=24, batch_size=4))
    app = create_app(model, tokenizer, batch_wait_ms=1000)
    bodies = [{"messages": c, "max_tokens": 24, "stop": s} for c, s in zip(conversations, stops)]
    bodies[0]["stream"] = True
    replies = _concurrently(TestClient(app), bodies)
    assert list(app.state.worker.batch_sizes) == [4]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in _events(replies[0]))
    assert streamed.strip() == free.responses[0][:free.responses[0].index(stop)].strip()
    for i in (1, 2):
        answer, strings = free.responses[i], [stops[i]] if isinstance(stops[i], str) else stops[i]
        cut = min(answer.index(s) for s in strings if s in answer)
        body = replies[i].json()
        assert body["choices"][0]["message"]["content"] == answer[:cut].strip()
        assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] < 24
    body = replies[3].json()  # no stop: as generate() answers it, to max_tokens
    assert body["choices"][0]["message"]["content"] == free.responses[3]
    assert body["choices"][0]["finish_reason"] == free.finish_reasons[3] == "length"
    assert body["usage"]["completion_tokens"] == len(free.token_ids[3])


def test_a_defense_that_replaces_the_answer_keeps_it_whole_whatever_the_stop_strings(varied):
    client = TestClient(create_app(*varied, [Censor()]))
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 5, "stop": ["removed", "Safe"]}
    whole = client.post("/v1/chat/completions", json=body).json()
    assert whole["choices"][0]["message"]["content"] == "[removed]"
    assert whole["choices"][0]["finish_reason"] == "content_filter"
    last = _events(client.post("/v1/chat/completions", json={**body, "stream": True}))[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["hf_sentinel"]["content"] == "[removed]"
