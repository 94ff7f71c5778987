"""Inference handlers a model provider attaches when serving: a Python callable or an upstream
OpenAI-compatible endpoint (the provider resells access to an LLM)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import httpx

from marketplace.errors import AgentmarketError

#: A handler takes the request's JSON ``input`` and returns JSON-able output.
ModelHandler = Callable[[Any], Any]


class InferenceError(AgentmarketError):
    """The handler could not answer (bad input for the model, or the upstream failed)."""


def python_handler(spec: str) -> ModelHandler:
    """The callable named ``package.module:attribute``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        raise AgentmarketError(f"model handler {spec!r} must look like package.module:function")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise AgentmarketError(f"cannot load model handler {spec!r}: {exc}") from None
    if not callable(handler):
        raise AgentmarketError(f"model handler {spec!r} is not callable")
    return handler


def openai_handler(
    base_url: str, model: str | None = None, api_key: str = "unused", timeout: float = 120
) -> ModelHandler:
    """Forward ``{"messages": [...], ...}`` to ``base_url``/chat/completions and return its JSON."""
    client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                          headers={"Authorization": f"Bearer {api_key}"})  # fmt: skip

    def handle(payload: Any) -> Any:
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise InferenceError('input must be an OpenAI chat request: {"messages": [...]}')
        body = {**payload, "model": payload.get("model") or model or "default"}
        body.pop("stream", None)
        try:
            response = client.post("/chat/completions", json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise InferenceError(f"the upstream model at {base_url} failed: {exc}") from None
        return response.json()

    return handle


def parse_handler(spec: str) -> ModelHandler:
    """``openai+URL[#model]`` for an upstream endpoint, else ``package.module:function``."""
    if spec.startswith("openai+"):
        url, _, model = spec.removeprefix("openai+").partition("#")
        return openai_handler(url, model or None)
    return python_handler(spec)
