"""Model handlers the gateway tests serve (``model_handlers`` of ``create_app``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class SlowModel:
    """A model that takes ``seconds`` (an upstream LLM, say: its calls stay in flight) and counts how often it
    ran (``runs``); it answers ``answer(payload)``."""

    def __init__(self, seconds: float, answer: Callable[[Any], Any]) -> None:
        self.seconds, self.answer = seconds, answer
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self, payload: Any) -> Any:
        with self._lock:
            self.runs += 1
        time.sleep(self.seconds)
        return self.answer(payload)
