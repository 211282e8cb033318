"""A real ``hf-sentinel serve`` process driven by the official ``openai`` client: plain and streamed completions,
stop strings, concurrent requests that batch, a load of 50 clients, API keys, errors, and a graceful shutdown on
SIGTERM.

Three server processes (one shared, one with API keys, one that is shut down), each on a free loopback port, all
serving a tiny random Llama; answers stay short so the module runs in seconds on 2 cores."""

from __future__ import annotations

import itertools
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import openai
import pytest
from spaces_support import Server, serving, tiny_target_dir
from transformers import AutoTokenizer

HELLO = [{"role": "user", "content": "Please explain how encryption works"}]
SYSTEM = "Be brief."
KEYS = ("secret-key", "second-key")
#: The most one request may take here: a stuck server fails the test instead of hanging it.
REQUEST_TIMEOUT = 60


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory) -> Path:
    return tiny_target_dir(tmp_path_factory.mktemp("clients") / "target")


@pytest.fixture(scope="module")
def tokenizer(target_dir):
    return AutoTokenizer.from_pretrained(target_dir)


@pytest.fixture(scope="module")
def shared(target_dir, tmp_path_factory):
    """Tests 1-4, 7 and 8: small batches, with a wait long enough that concurrent requests share them."""
    log = tmp_path_factory.mktemp("logs") / "shared.log"
    with serving(target_dir, log, "--max-batch-size", "8", "--batch-wait-ms", "200") as server:
        yield server


@pytest.fixture(scope="module")
def keyed(target_dir, tmp_path_factory):
    """Two keys on the command line (so the environment's key must not count) and a system-prompt defense."""
    log = tmp_path_factory.mktemp("logs") / "keyed.log"
    with serving(target_dir, log, "--api-key", KEYS[0], "--api-key", KEYS[1], "--defense", f"system-prompt:{SYSTEM}",
                 env={"HF_SENTINEL_API_KEY": "env-key"}) as server:
        yield server


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """The prompt's length as the target reads it: the chat template with the assistant turn opened."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def topic(i: int) -> list[dict]:
    """A different request for every ``i``, each one token longer than the one before."""
    return [{"role": "user", "content": f"Tell me about topic number {i}:" + " more" * i}]


def check_usage(usage, finish_reason: str, max_tokens: int, expected_prompt_tokens: int) -> None:
    assert usage.prompt_tokens == expected_prompt_tokens
    # 0 is possible: a sampled answer may end at once (the end-of-sequence token is not counted)
    assert 0 <= usage.completion_tokens <= max_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # "length" exactly when the answer used its whole max_tokens (its own, not a batch neighbour's)
    assert (finish_reason == "length") == (usage.completion_tokens == max_tokens), (finish_reason, usage)


def check_completion(completion, server: Server, max_tokens: int, expected_prompt_tokens: int) -> str:
    """A well-formed ``chat.completion`` with a non-empty answer; returns the answer."""
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == server.model
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip(), choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    check_usage(completion.usage, choice.finish_reason, max_tokens, expected_prompt_tokens)
    assert completion.usage.completion_tokens >= 1
    return choice.message.content


def read_stream(stream, include_usage: bool = True) -> dict:
    """Consume a streamed completion, checking the chunk sequence; return its id, text, finish_reason, usage."""
    chunks = list(stream)
    assert chunks, "the stream sent no chunk"
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    finishes = [chunk.choices[0].finish_reason for chunk in with_choices if chunk.choices[0].finish_reason]
    assert len(finishes) == 1, finishes
    assert with_choices[-1].choices[0].finish_reason == finishes[0]  # nothing after the finish but usage
    usage = None
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert all(chunk.usage is None for chunk in chunks[:-1])
        usage = chunks[-1].usage
    else:
        assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert not any((chunk.model_extra or {}).get("hf_sentinel", {}).get("retracted") for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    return {"id": chunks[0].id, "text": text, "finish_reason": finishes[0], "usage": usage, "chunks": chunks}


# ------------------------------------------------------------------------------------------- 1, 2: one request


def test_non_streaming_completion_is_well_formed_with_usage_and_the_extension(shared, tokenizer):
    completion = shared.client().chat.completions.create(model=shared.model, messages=HELLO, max_tokens=6)
    check_completion(completion, shared, 6, prompt_tokens(tokenizer, HELLO))
    assert completion.model_extra["hf_sentinel"]["defense"] == "none"
    # max_completion_tokens (OpenAI's newer name) sets the limit as well
    shorter = shared.client().chat.completions.create(model=shared.model, messages=HELLO, max_completion_tokens=2)
    assert shorter.usage.completion_tokens <= 2


def test_models_list_and_retrieve_through_the_client(shared):
    client = shared.client()
    [card] = client.models.list().data
    assert card.id == shared.model and card.object == "model" and card.owned_by == "hf-sentinel"
    assert card.model_extra["hf_sentinel"] == {"defense": "none", "defenses": []}
    # the served id is a folder path: the client percent-encodes its slashes, the server must still find it
    assert client.models.retrieve(shared.model).id == shared.model
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-4o")
    assert error.value.code == "model_not_found" and "is not served here" in error.value.body["message"]


def test_streamed_answer_equals_the_plain_answer_and_ends_with_usage(shared, tokenizer):
    client = shared.client()
    request = dict(model=shared.model, messages=HELLO, max_tokens=6, temperature=0)
    plain = client.chat.completions.create(**request)
    streamed = read_stream(client.chat.completions.create(**request, stream=True,
                                                          stream_options={"include_usage": True}))
    assert streamed["text"].strip() == plain.choices[0].message.content
    assert streamed["finish_reason"] == plain.choices[0].finish_reason
    assert streamed["usage"].model_dump() == plain.usage.model_dump()
    assert streamed["chunks"][0].model_extra["hf_sentinel"]["defense"] == "none"
    assert streamed["id"] != plain.id

    # without include_usage no usage chunk; on the wire, the stream ends with [DONE]
    assert read_stream(client.chat.completions.create(**request, stream=True), include_usage=False)["text"].strip() \
        == plain.choices[0].message.content
    with httpx.stream("POST", f"{shared.url}/v1/chat/completions", json={**request, "stream": True},
                      timeout=REQUEST_TIMEOUT) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1


# --------------------------------------------------------------------------------------- 3, 4: many at once


def test_sixteen_concurrent_requests_each_get_their_own_answer(shared, tokenizer):
    count = 16
    barrier = threading.Barrier(count, timeout=REQUEST_TIMEOUT)
    client = shared.client()

    def ask(i: int):
        barrier.wait()  # all sixteen leave together, so they arrive within one batch wait
        return client.chat.completions.create(model=shared.model, messages=topic(i), max_tokens=3 + i % 6)

    with ThreadPoolExecutor(count) as pool:
        completions = list(pool.map(ask, range(count), timeout=120))
    assert len({completion.id for completion in completions}) == count
    for i, completion in enumerate(completions):
        # each prompt has its own length and each request its own max_tokens: a row answered to the wrong
        # request (or cut at another row's limit) shows in its usage
        check_completion(completion, shared, 3 + i % 6, prompt_tokens(tokenizer, topic(i)))
    assert len({completion.usage.prompt_tokens for completion in completions}) == count


def test_fifty_concurrent_clients_streaming_or_not_are_all_answered(shared, tokenizer):
    """Greedy and sampled, seeded or not, streamed or not: 50 requests at once, none lost, each well-formed."""
    count, max_tokens = 50, 4
    barrier = threading.Barrier(count, timeout=REQUEST_TIMEOUT)
    client = shared.client()

    def request(i: int) -> dict:
        if i >= count - 2:  # the last two: the same seeded sampled request, which must repeat its answer
            return dict(messages=topic(100), temperature=1.0, seed=7)
        sampling = [dict(temperature=0), dict(temperature=0.9, top_p=0.9), dict(temperature=0.7, seed=i)][i % 3]
        return dict(messages=topic(i), **sampling)

    def ask(i: int) -> dict:
        stream = i % 2 == 1
        barrier.wait()
        reply = client.chat.completions.create(model=shared.model, max_tokens=max_tokens, stream=stream,
                                               stream_options={"include_usage": True} if stream else None,
                                               **request(i))
        if stream:
            return read_stream(reply)
        [choice] = reply.choices
        assert reply.object == "chat.completion" and choice.message.role == "assistant"
        assert isinstance(choice.message.content, str)
        return {"id": reply.id, "text": choice.message.content, "finish_reason": choice.finish_reason,
                "usage": reply.usage}

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(ask, i) for i in range(count)]
        done, pending = wait(futures, timeout=120)
        assert not pending, f"{len(pending)} of {count} requests got no answer within 120 s"
    results = [future.result() for future in futures]  # re-raises any client error
    assert len({result["id"] for result in results}) == count
    for i, result in enumerate(results):
        assert result["finish_reason"] in {"stop", "length"}
        expected = prompt_tokens(tokenizer, request(i)["messages"])
        check_usage(result["usage"], result["finish_reason"], max_tokens, expected)
        if request(i).get("temperature") == 0:
            assert result["text"].strip(), f"request {i}: empty greedy answer"
    assert results[-1]["text"].strip() == results[-2]["text"].strip()  # seeded: the same answer twice

    health = httpx.get(f"{shared.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    check_completion(client.chat.completions.create(model=shared.model, messages=HELLO, max_tokens=4), shared, 4,
                     prompt_tokens(tokenizer, HELLO))


# ------------------------------------------------------------------------------------------------- 7: errors


def test_bad_requests_raise_bad_request_error_with_the_servers_message(shared):
    client = shared.client()
    for stream in (False, True):  # a streamed request is refused with HTTP 400 too, before any chunk
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model=shared.model, messages=HELLO, max_tokens=0, stream=stream)
        assert error.value.status_code == 400 and error.value.param == "max_tokens"
        assert error.value.type == "invalid_request_error"
        assert error.value.body["message"] == "max_tokens must be between 1 and 2048, got 0."
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=shared.model, messages=HELLO, max_tokens=4, n=2)
    assert error.value.param == "n" and error.value.body["message"].startswith("n=2 is not supported")
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=shared.model, messages=[{"role": "user", "content": " "}], max_tokens=4)
    assert error.value.param == "messages[0].content" and "is empty" in error.value.body["message"]


# ------------------------------------------------------------------------------------------ 8: stop strings


def test_stop_strings_end_the_answer_before_them_streamed_or_not(shared):
    client = shared.client()
    request = dict(model=shared.model, messages=HELLO, max_tokens=16, temperature=0)
    free = client.chat.completions.create(**request)
    assert free.choices[0].finish_reason == "length"
    answer = free.choices[0].message.content
    stop = re.search(r"[A-Za-z0-9]{3,}", answer).group()  # a few tokens of the answer without a stop string
    expected = answer[:answer.index(stop)].strip()
    plain = client.chat.completions.create(**request, stop=["\n\nUser:", stop])
    assert plain.choices[0].message.content == expected and plain.choices[0].finish_reason == "stop"
    assert 1 <= plain.usage.completion_tokens < 16
    streamed = read_stream(client.chat.completions.create(**request, stop=stop, stream=True,
                                                          stream_options={"include_usage": True}))
    assert stop not in streamed["text"] and streamed["text"].strip() == expected
    assert streamed["finish_reason"] == "stop" and streamed["usage"].model_dump() == plain.usage.model_dump()
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(**request, stop=["a", "b", "c", "d", "e"])
    assert error.value.param == "stop" and "more than the 4 allowed" in error.value.body["message"]


# ---------------------------------------------------------------------------------------------- 5: API keys


def test_api_keys_guard_v1_but_not_health(keyed, tokenizer):
    for key in ("wrong-key", "env-key"):  # keys given with --api-key replace the environment's
        with pytest.raises(openai.AuthenticationError) as error:
            keyed.client(key).chat.completions.create(model=keyed.model, messages=HELLO, max_tokens=4)
        assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
        assert "Incorrect API key" in error.value.body["message"] and "--api-key" in error.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        keyed.client("wrong-key").models.list()
    missing = httpx.post(f"{keyed.url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4}, timeout=30)
    assert missing.status_code == 401
    assert "Authorization: Bearer KEY" in missing.json()["error"]["message"]
    assert httpx.get(f"{keyed.url}/v1/models", timeout=10).status_code == 401
    assert httpx.get(f"{keyed.url}/health", timeout=10).status_code == 200

    completion = keyed.client(KEYS[0]).chat.completions.create(model=keyed.model, messages=HELLO, max_tokens=4)
    # the defense's system prompt is part of what the target read, and of the usage
    with_system = [{"role": "system", "content": SYSTEM}, *HELLO]
    check_completion(completion, keyed, 4, prompt_tokens(tokenizer, with_system))
    assert completion.model_extra["hf_sentinel"]["defense"] == f"system-prompt:{SYSTEM}"
    [card] = keyed.client(KEYS[1]).models.list().data
    assert card.id == keyed.model and card.model_extra["hf_sentinel"]["defenses"] == [f"system-prompt:{SYSTEM}"]


# ---------------------------------------------------------------------------------------- 6: graceful shutdown


def test_sigterm_finishes_the_requests_in_flight_then_exits_cleanly(target_dir, tokenizer, tmp_path):
    long = 1000  # about 1-2 s of generation for the tiny model on one core
    with serving(target_dir, tmp_path / "shutdown.log", "--shutdown-timeout", "30", "--batch-wait-ms", "300") \
            as server:
        client = server.client()
        plain: dict = {}

        def ask_plain():
            try:
                plain["completion"] = client.chat.completions.create(model=server.model, messages=topic(1),
                                                                     max_tokens=long)
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                plain["error"] = error

        thread = threading.Thread(target=ask_plain)
        thread.start()
        stream = client.chat.completions.create(model=server.model, messages=HELLO, max_tokens=long, stream=True,
                                                stream_options={"include_usage": True})
        chunks, iterator = [], iter(stream)
        while not (chunks and chunks[-1].choices and chunks[-1].choices[0].delta.content):
            chunks.append(next(iterator))  # until the first text: generation is under way, both are in flight
        server.process.send_signal(signal.SIGTERM)
        rest = read_stream(itertools.chain(chunks, iterator))  # the whole stream: fails on a cut one
        thread.join(REQUEST_TIMEOUT)

        assert rest["finish_reason"] == "length" and rest["usage"].completion_tokens == long
        assert rest["usage"].prompt_tokens == prompt_tokens(tokenizer, HELLO)
        assert "error" not in plain, plain.get("error")
        assert plain["completion"].choices[0].finish_reason == "length"
        assert plain["completion"].usage.completion_tokens == long
        returncode = server.process.wait(timeout=40)
        assert returncode == 0, (f"after a graceful shutdown the server exited with {returncode} "
                                 f"(-15: killed by the SIGTERM that uvicorn re-raises):\n{server.log.read_text()}")
