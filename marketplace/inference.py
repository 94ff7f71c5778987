"""Inference handlers a model provider attaches when serving: a Python callable or an upstream
OpenAI-compatible endpoint (the provider resells access to an LLM).

A resold upstream is paid by the operator per token, while a caller pays the asset's price per
call. So the operator, not the caller, decides what one call may cost upstream
(:class:`UpstreamPolicy`): the model, one completion (``n`` = 1), a ``max_tokens`` cap, no
streaming, no log-probabilities, and tools only when the operator configured them. A caller
controls only the input:

- ``messages`` (required): 1 to ``max_messages`` chat messages, roles ``system``, ``user``,
  ``assistant`` (plus ``tool`` when tools are configured), content a string or a list of text parts,
  at most ``max_input_chars`` characters of JSON in all;
- optionally ``temperature`` (0 to 2), ``top_p`` (0 to 1), ``max_tokens`` (1 to the cap), ``stop`` (a
  string or up to 4), ``seed`` (an integer), and ``model`` only if it names the served model.

Anything else (``n``, ``tools``, ``stream``, ``logprobs``, ``logit_bias``…) is refused with
:class:`ModelInputError` (HTTP 422 at the gateway) naming the key. An upstream failure raises
:class:`InferenceError` (HTTP 502) whose message never shows the upstream URL or key; the
operator's log (logger ``marketplace.inference``) has the details.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from marketplace.errors import AgentmarketError
from marketplace.protocol.jsonlimits import JsonTooLarge
from marketplace.protocol.jsonlimits import loads as bounded_loads

#: A handler takes the request's JSON ``input`` and returns JSON-able output.
ModelHandler = Callable[[Any], Any]
#: Largest answer read from an upstream, in bytes; deepest JSON nesting parsed in it (else InferenceError: 502).
MAX_UPSTREAM_BYTES = 8 * 1024 * 1024
MAX_UPSTREAM_JSON_DEPTH = 256
#: Environment variable holding the upstream's API key (sent as a bearer token; never shown to callers).
UPSTREAM_KEY_ENV = "AGENTMARKET_UPSTREAM_API_KEY"

log = logging.getLogger(__name__)


class InferenceError(AgentmarketError):
    """The handler could not answer: the model or its upstream failed (the gateway answers 502). Input the
    model does not accept is a :class:`ModelInputError` instead."""


class ModelInputError(AgentmarketError, ValueError):
    """The caller's input is not something this model accepts (the gateway answers 422)."""


def _import_module(name: str) -> Any:
    """Import ``name``; a module that is nowhere on ``sys.path`` is also looked for in the working directory
    (where ``python -m`` would find it, and an ``agentmarket`` script does not), searched after everything else
    so that it never shadows an installed module."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(name)


def python_handler(spec: str) -> ModelHandler:
    """The callable named ``package.module:attribute`` (a module in the working directory is found too)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        raise AgentmarketError(f"model handler {spec!r} must look like package.module:function")
    try:
        handler = getattr(_import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise AgentmarketError(f"cannot load model handler {spec!r}: {exc}") from None
    if not callable(handler):
        raise AgentmarketError(f"model handler {spec!r} is not callable")
    return handler


@dataclass(frozen=True)
class UpstreamPolicy:
    """What the operator fixes for every call forwarded to an OpenAI-compatible upstream.

    ``model`` is the upstream model; ``max_tokens`` caps the completion tokens of one call (also the
    default when the caller names none); ``max_messages`` and ``max_input_chars`` (characters of the
    messages' JSON) bound the input; ``tools`` (OpenAI tool specs) are forwarded as the operator's,
    and only when given may messages carry tool calls and results.
    """

    model: str = "default"
    max_tokens: int = 1024
    max_messages: int = 64
    max_input_chars: int = 64_000
    tools: tuple[dict[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.model:
            raise AgentmarketError("an upstream model needs a name")
        for name in ("max_tokens", "max_messages", "max_input_chars"):
            if getattr(self, name) < 1:
                raise AgentmarketError(f"upstream {name} must be at least 1, not {getattr(self, name)}")

    def request(self, payload: Any) -> dict[str, Any]:
        """The chat-completions body forwarded for the caller's ``payload``; :class:`ModelInputError` if refused."""
        if not isinstance(payload, dict) or "messages" not in payload:
            raise ModelInputError('input must be an OpenAI chat request: {"messages": [...]}')
        unknown = sorted(set(payload) - set(_CALLER_OPTIONS) - {"messages", "model"})
        if unknown:
            raise ModelInputError(
                f"input key {unknown[0]!r} is not the caller's to set; a call may send messages and "
                f"{', '.join(_CALLER_OPTIONS)} (the operator fixes the model, n, tools, streaming and the rest)"
            )
        if payload.get("model") not in (None, self.model):
            raise ModelInputError(f"this endpoint serves model {self.model!r}, not {_cut(payload['model'])}")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(payload["messages"]),
            "n": 1,
            "stream": False,
            "max_tokens": self.max_tokens,
        }
        for key, check in _CALLER_OPTIONS.items():
            if key in payload:
                body[key] = check(self, payload[key])
        if self.tools:
            body["tools"] = list(self.tools)
        return body

    def _messages(self, messages: Any) -> list[dict[str, Any]]:
        if not isinstance(messages, list) or not messages:
            raise ModelInputError("messages must be a non-empty list of chat messages")
        if len(messages) > self.max_messages:
            raise ModelInputError(f"at most {self.max_messages} messages per call, got {len(messages)}")
        roles = {"system", "user", "assistant"} | ({"tool"} if self.tools else set())
        keys = {"role", "content", "name"} | ({"tool_calls", "tool_call_id"} if self.tools else set())
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ModelInputError(f"message {index} must be an object with role and content")
            if message.get("role") not in roles:
                raise ModelInputError(f"message {index}: role must be one of {', '.join(sorted(roles))}")
            extra = sorted(set(message) - keys)
            if extra:
                raise ModelInputError(f"message {index}: key {extra[0]!r} is not accepted here")
            content = message.get("content")
            text_parts = isinstance(content, list) and all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            )
            tool_call = self.tools and message["role"] == "assistant" and content is None and "tool_calls" in message
            if not (isinstance(content, str) or text_parts or tool_call):
                raise ModelInputError(f"message {index}: content must be a string or a list of text parts")
        size = len(json.dumps(messages, ensure_ascii=False))
        if size > self.max_input_chars:
            raise ModelInputError(f"messages are {size} characters of JSON; at most {self.max_input_chars} per call")
        return messages


def _number(key: str, low: float, high: float) -> Callable[[UpstreamPolicy, Any], float]:
    def check(policy: UpstreamPolicy, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not low <= value <= high:
            raise ModelInputError(f"{key} must be a number from {low} to {high}, got {_cut(value)}")
        return value

    return check


def _max_tokens(policy: UpstreamPolicy, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= policy.max_tokens:
        raise ModelInputError(f"max_tokens must be an integer from 1 to {policy.max_tokens}, got {_cut(value)}")
    return value


def _stop(policy: UpstreamPolicy, value: Any) -> str | list[str]:
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or not 1 <= len(strings) <= 4 or not all(isinstance(s, str) for s in strings):
        raise ModelInputError("stop must be a string or a list of up to 4 strings")
    if any(len(s) > 64 for s in strings):
        raise ModelInputError("each stop sequence may be at most 64 characters")
    return value


def _seed(policy: UpstreamPolicy, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
        raise ModelInputError(f"seed must be a 64-bit integer, got {_cut(value)}")
    return value


#: What a caller may set besides ``messages`` (and ``model``, if it names the served one), with its check.
_CALLER_OPTIONS: dict[str, Callable[[UpstreamPolicy, Any], Any]] = {
    "temperature": _number("temperature", 0, 2),
    "top_p": _number("top_p", 0, 1),
    "max_tokens": _max_tokens,
    "stop": _stop,
    "seed": _seed,
}


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def openai_handler(
    base_url: str,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 120,
    *,
    policy: UpstreamPolicy | None = None,
) -> ModelHandler:
    """Forward a caller's chat request, as ``policy`` rewrites it, to ``base_url``/chat/completions.

    Returns the upstream's JSON. ``policy`` (default: :class:`UpstreamPolicy` for ``model``) fixes
    everything but the input; ``api_key`` is sent as a bearer token. Raises
    :class:`ModelInputError` for input the policy refuses (nothing is sent upstream) and
    :class:`InferenceError` when the upstream fails, without its URL or key in the message.
    """
    policy = policy or UpstreamPolicy(model=model or "default")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def handle(payload: Any) -> Any:
        body = policy.request(payload)
        try:
            with client.stream("POST", "/chat/completions", json=body) as response:
                content = b"".join(_bounded(response.iter_bytes(), MAX_UPSTREAM_BYTES))
        except httpx.TimeoutException as exc:
            log.warning("upstream model %s at %s timed out: %s", policy.model, base_url, exc)
            raise InferenceError(f"the upstream model {policy.model!r} did not answer in time") from None
        except httpx.HTTPError as exc:
            log.warning("upstream model %s at %s is unreachable: %s", policy.model, base_url, exc)
            raise InferenceError(f"the upstream model {policy.model!r} is unreachable") from None
        except JsonTooLarge:
            log.warning("upstream model %s at %s answered more than %s bytes", policy.model, base_url,
                        MAX_UPSTREAM_BYTES)  # fmt: skip
            raise InferenceError(f"the upstream model {policy.model!r} answered too much") from None
        text = content[:500].decode("utf-8", "replace")
        if response.status_code >= 400:
            log.warning("upstream model %s at %s answered %s: %.500s", policy.model, base_url,
                        response.status_code, text)  # fmt: skip
            raise InferenceError(f"the upstream model {policy.model!r} failed (HTTP {response.status_code})")
        try:  # depth-bounded: deep JSON would crash this process (see marketplace.protocol.jsonlimits)
            return bounded_loads(content, max_depth=MAX_UPSTREAM_JSON_DEPTH)
        except ValueError:
            log.warning("upstream model %s at %s answered non-JSON (or JSON nested too deep): %.200s",
                        policy.model, base_url, text)  # fmt: skip
            raise InferenceError(f"the upstream model {policy.model!r} answered something other than JSON") from None

    return handle


def _bounded(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """``chunks`` until they add up to more than ``limit`` bytes (then :class:`JsonTooLarge`)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise JsonTooLarge(received, limit)
        yield chunk


#: ``openai+URL#model?key=value`` options an operator may set in a ``--model`` spec.
_SPEC_OPTIONS = ("max_tokens", "max_messages", "max_input_chars")


def parse_handler(spec: str) -> ModelHandler:
    """``openai+URL[#model[?max_tokens=N&max_messages=N&max_input_chars=N]]`` for an upstream endpoint,
    else ``package.module:function``.

    The upstream's API key, if any, comes from ``$AGENTMARKET_UPSTREAM_API_KEY``.
    """
    if not spec.startswith("openai+"):
        return python_handler(spec)
    url, _, fragment = spec.removeprefix("openai+").partition("#")
    model, _, query = fragment.partition("?")
    options: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SPEC_OPTIONS or not value.isdigit():
            raise AgentmarketError(
                f"model option {key}={value!r} is not one of {', '.join(_SPEC_OPTIONS)} = a positive integer"
            )
        options[key] = int(value)
    policy = UpstreamPolicy(model=model or "default", **options)
    return openai_handler(url, api_key=os.environ.get(UPSTREAM_KEY_ENV) or None, policy=policy)
