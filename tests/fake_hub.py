"""A stand-in for the Hugging Face Hub at its HTTP boundary: the endpoints an upload uses (create repo, validate the
card's YAML, pre-upload, commit), served on 127.0.0.1 and recording what arrives. Point ``HfApi(endpoint=...)`` or
``HF_ENDPOINT`` at :attr:`FakeHub.url` (with ``HF_HUB_OFFLINE`` off)."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """``repos[repo_id] = {"private": bool, "files": {path: bytes}, "commits": [message, ...]}``; other requests are
    answered 404: POSTs (writes) are listed in ``unexpected``, GETs (the client's own look-ups) in ``lookups``."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.unexpected: list[str] = []
        self.lookups: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.handle(self, self.path.split("?")[0], body)

            def do_GET(self):
                hub.handle(self, self.path.split("?")[0], b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request, path: str, body: bytes) -> None:
        if request.command == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            organization = payload.get("organization")
            repo_id = f"{organization}/{payload['name']}" if organization else payload["name"]
            private = bool(payload.get("private")) or payload.get("visibility") == "private"
            self.repos.setdefault(repo_id, {"private": private, "files": {}, "commits": []})
            return _reply(request, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        if request.command == "POST" and path == "/api/validate-yaml":
            errors = _yaml_errors(json.loads(body)["content"])
            answer = {"errors": [{"message": e} for e in errors], "warnings": []}
            return _reply(request, 400 if errors else 200, answer)
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if request.command == "POST" and match and match.group(1) in self.repos:
            repo_id, action = match.group(1), match.group(2)
            if action == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                         for f in files]
                return _reply(request, 200, {"files": modes})
            repo = self.repos[repo_id]
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "header":
                    repo["commits"].append(entry["value"]["summary"])
                elif entry["key"] == "file":
                    repo["files"][entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
                else:
                    self.unexpected.append(f"commit entry {entry['key']}")
            oid = f"{len(repo['commits']):040x}"
            return _reply(request, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid})
        (self.unexpected if request.command == "POST" else self.lookups).append(f"{request.command} {path}")
        return _reply(request, 404, {"error": f"fake Hub: no such endpoint {request.command} {path}"})


def _reply(request, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _yaml_errors(readme: str) -> list[str]:
    """What the Hub would refuse in a model card's metadata (a subset: it must parse, and so must model-index)."""
    from huggingface_hub import ModelCard

    if not readme.startswith("---\n"):
        return ["README.md has no YAML metadata block"]
    try:
        data = ModelCard(readme).data
    except Exception as error:  # what the real endpoint reports as a 400
        return [f"invalid metadata: {error}"]
    return [] if data.library_name else ["library_name is missing"]


def push_and_read_card(trainer, repo_id: str, monkeypatch) -> tuple[dict, object]:
    """Push a trained artifact through its trainer's one push path (``trainer.push_to_hub``) to a fake Hub, check what
    every artifact's push must give, and return the uploaded files and the card read back from them.

    The checks: the push made one commit and nothing unexpected; the card's metadata parses and names hf-sentinel;
    the usage snippets name ``repo_id`` where the local card says ``PATH_OR_REPO_ID``; no pickles were uploaded."""
    import huggingface_hub
    from huggingface_hub import ModelCard

    from hf_sentinel.hub import REPO_PLACEHOLDER

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        url = trainer.push_to_hub(repo_id, token="hf_fake")
    assert url.startswith(f"{hub.url}/{repo_id}/commit/") and not hub.unexpected
    files = hub.repos[repo_id]["files"]
    assert not [path for path in files if path.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]
    text = files["README.md"].decode()
    assert not _yaml_errors(text)
    card = ModelCard(text)
    assert card.data.library_name == "hf-sentinel" and "hf-sentinel" in card.data.tags
    assert REPO_PLACEHOLDER not in text and f'"{repo_id}"' in card.text
    return files, card
