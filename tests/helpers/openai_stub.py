"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol with scripted replies.

Each POST to ``/v1/chat/completions`` records the request body and answers with the next scripted
reply: tool calls (name + raw argument string, so tests can send malformed JSON) or a text answer. A
reply may also be a function of the request body (a "policy"), which then answers every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tool_calls(*calls: tuple[str, str]) -> dict[str, Any]:
    """A scripted reply calling tools: ``(name, raw JSON arguments)`` pairs."""
    return {"tool_calls": list(calls)}


def answer(text: str) -> dict[str, Any]:
    """A scripted final text reply."""
    return {"content": text}


class ScriptedLLM:
    """Serve scripted chat completions until stopped; ``requests`` holds every body received."""

    def __init__(
        self,
        replies: list[dict[str, Any]] | Callable[[dict[str, Any]], dict[str, Any]],
        *,
        prompt_tokens: int = 100,
        completion_tokens: int = 20,
    ):
        self.policy = replies if callable(replies) else None
        self.replies = [] if callable(replies) else list(replies)
        self.requests: list[dict[str, Any]] = []
        self.tokens = (prompt_tokens, completion_tokens)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                stub.requests.append(body)
                if stub.policy is not None:
                    self._send(200, stub.completion(stub.policy(body), body["model"], len(stub.requests)))
                    return
                if not stub.replies:
                    self._send(500, {"error": {"message": "script exhausted"}})
                    return
                self._send(200, stub.completion(stub.replies.pop(0), body["model"], len(stub.requests)))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (ends in /v1)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def completion(self, reply: dict[str, Any], model: str, number: int) -> dict[str, Any]:
        """A chat.completion object for one scripted reply."""
        message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
        finish = "stop"
        if "tool_calls" in reply:
            finish = "tool_calls"
            message["tool_calls"] = [
                {"id": f"call_{number}_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
                for i, (name, arguments) in enumerate(reply["tool_calls"])
            ]
        prompt, completion = self.tokens
        return {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }  # fmt: skip

    def __enter__(self) -> ScriptedLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
