"""``hf-sentinel serve`` on bad input: HTTP 400 in OpenAI's error shape before the model is reached; a failure
inside generation is a 500 with a message, and the server keeps serving."""

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from hf_sentinel.defaults import tiny_model, tiny_tokenizer
from hf_sentinel.defenses import Defense
from hf_sentinel.generation import GenerationSettings, generate
from hf_sentinel.remote import RemoteChatTarget
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
    ({"messages": HELLO, "stream": True}, "stream", "stream=true is not supported by this server; send stream=false."),
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


def test_remote_target_reports_the_servers_message(client, monkeypatch):
    monkeypatch.setattr(httpx, "post", lambda url, json, headers, timeout: client.post(
        url.removeprefix("http://testserver"), json=json))
    remote = RemoteChatTarget("http://testserver/v1")
    with pytest.raises(ConnectionError, match=r"answered HTTP 400: messages\[0\].role 'tool' is not supported"):
        remote.chat([[{"role": "tool", "content": "hi"}]])
    assert isinstance(remote.chat([HELLO], max_new_tokens=2)[0], str)


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
