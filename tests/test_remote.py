"""``RemoteChatTarget`` against a stand-in chat-completions server on 127.0.0.1: concurrent requests over one
connection pool with answers in input order, servers that stream server-sent events anyway, and their errors."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hf_sentinel.remote import RemoteChatTarget, _join_stream

SSE_CHUNKS = [{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Encryption "}}]},
              {"choices": [{"delta": {"content": None}}]}, {"choices": [{"delta": {"content": "scrambles data é"}}]},
              {"choices": [{"delta": {}, "finish_reason": "stop"}]}, {"choices": [], "usage": {"total_tokens": 9}}]


class FakeChatServer:
    """POST /v1/chat/completions, by the last user message: ``sse`` streams :data:`SSE_CHUNKS`; ``sse-error`` streams
    an error event; ``bad ...`` is an HTTP 400 in OpenAI's error shape naming the message; anything else is echoed
    after 0.2 s (0.4 s when it contains ``slow``). Records the bodies, client ports and most requests in flight."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.ports: set[int] = set()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse shows in the client ports

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    fake.ports.add(self.client_address[1])
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake.answer(self, body["messages"][-1]["content"])
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, request, content: str) -> None:
        if content == "sse":
            events = [f"data: {json.dumps(chunk)}\n\n" for chunk in SSE_CHUNKS]
            events[1] = events[1].replace("data: ", "data:", 1)  # the space after the colon is optional
            text = ": keep-alive\n\n" + "".join(events) + "data: [DONE]\n\n" + events[1]
            return _send(request, 200, "text/event-stream; charset=utf-8", text)
        if content == "sse-error":
            text = (f"data: {json.dumps(SSE_CHUNKS[1])}\n\n"
                    'data: {"error": {"message": "upstream model overloaded", "type": "server_error"}}\n\n')
            return _send(request, 200, "text/event-stream", text)
        if content.startswith("bad"):
            time.sleep(0.3 if "slow" in content else 0.0)
            error = {"error": {"message": f"refused {content!r}", "type": "invalid_request_error"}}
            return _send(request, 400, "application/json", json.dumps(error))
        time.sleep(0.4 if "slow" in content else 0.2)
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {content}"}}]}
        return _send(request, 200, "application/json", json.dumps(answer))


def _send(request, status: int, content_type: str, text: str) -> None:
    data = text.encode()
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _user(content: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


@pytest.fixture
def server():
    with FakeChatServer() as fake:
        yield fake


def test_requests_go_out_concurrently_and_answers_come_back_in_order(server):
    # The first answer comes last, so answers gathered in completion order would be out of order.
    contents = ["slow 0", *(f"message {i}" for i in range(1, 8))]
    answers = RemoteChatTarget(server.url).chat([_user(c) for c in contents], max_new_tokens=5, seed=3)
    assert answers == [f"echo: {c}" for c in contents]
    assert server.max_in_flight > 1
    assert len(server.bodies) == 8 and all(body["stream"] is False for body in server.bodies)
    assert {(b["max_tokens"], b["temperature"], b["seed"]) for b in server.bodies} == {(5, 0.0, 3)}


def test_max_concurrency_one_sends_one_by_one_over_one_connection(server):
    contents = ["slow 0", "message 1", "message 2"]
    target = RemoteChatTarget(server.url, max_concurrency=1)
    assert target.chat([_user(c) for c in contents], do_sample=True, temperature=0.7) == [f"echo: {c}"
                                                                                          for c in contents]
    assert server.max_in_flight == 1 and len(server.ports) == 1
    assert [b["messages"][-1]["content"] for b in server.bodies] == contents
    assert all(b["stream"] is False and b["temperature"] == 0.7 and "seed" not in b for b in server.bodies)


def test_a_server_that_streams_anyway_is_understood(server):
    target = RemoteChatTarget(server.url)
    assert target.chat([_user("sse"), _user("message 1")]) == ["Encryption scrambles data é", "echo: message 1"]
    assert all(body["stream"] is False for body in server.bodies)


def test_the_first_failing_conversation_in_input_order_names_the_servers_message(server):
    conversations = [_user("message 0"), _user("bad slow first"), _user("message 2"), _user("bad second")]
    with pytest.raises(ConnectionError, match=r"/chat/completions answered HTTP 400: refused 'bad slow first'"):
        RemoteChatTarget(server.url).chat(conversations)


def test_an_error_event_in_a_stream_is_a_connection_error_with_the_servers_message(server):
    with pytest.raises(ConnectionError, match=r"/chat/completions streamed an error: upstream model overloaded$"):
        RemoteChatTarget(server.url).chat([_user("message 0"), _user("sse-error")])


def test_join_stream_reads_openai_chunks_and_stops_at_done():
    text = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in SSE_CHUNKS)
    assert _join_stream(text + "data: [DONE]\n\ndata: not json\n\n") == "Encryption scrambles data é"
    with pytest.raises(ConnectionError, match="^quota exceeded$"):
        _join_stream(text + 'data: {"error": {"message": "quota exceeded"}}\n\n')


def test_max_concurrency_must_be_positive():
    with pytest.raises(ValueError, match=r"max_concurrency must be at least 1 \(1 sends requests one by one\), got 0"):
        RemoteChatTarget("http://127.0.0.1:8000/v1", max_concurrency=0)
