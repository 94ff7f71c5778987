"""The agent's tools over the Model Context Protocol, so any MCP-capable LLM client can act as a marketplace
agent with this agent's wallet and caps — and no way past them.

The MCP tools are exactly ``agents.tools.TOOLS``: input schemas come from their pydantic argument models,
output schemas from their pydantic result models (every tool has one). A call runs ``run_tool`` in a worker
thread, one call at a time (the budget guard checks then commits, so concurrent purchases must not
interleave). What comes back, per the MCP tools specification (2025-06-18 and later):

- a result: ``structuredContent`` is the result model dumped as JSON (it always validates against the
  tool's ``outputSchema``), and one text block carries the same JSON;
- a typed agent error (``OverBudget``, ``BadArguments``, ``NotFound``, ...): a tool result with ``isError``
  and one text block ``"<ErrorType>: <detail>"``, and no ``structuredContent`` (it would not match the
  output schema), so the model can see why and correct itself;
- an unknown tool name: a JSON-RPC protocol error, code -32602 (invalid params), naming the known tools;
- any other exception: a JSON-RPC internal error (-32603) whose message never carries the wallet's keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import traceback
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from agents.errors import AgentError
from agents.tools import TOOLS, Tool, ToolContext, run_tool
from marketplace import __version__

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Tools of an agent on the agentmarket data and model marketplace. Amounts are tUSD base units "
    "(1 tUSD = 1,000,000). Every payment is checked against the budget the agent's owner set; a call "
    "that would exceed it is refused with an OverBudget error and nothing is paid. check_balance shows "
    "what is left."
)


def mcp_tool(tool: Tool) -> types.Tool:
    """One agent tool as an MCP tool description (with its input and output schemas)."""
    spec = tool.mcp_spec()
    return types.Tool(name=spec["name"], description=spec["description"], input_schema=spec["inputSchema"],
                      output_schema=spec["outputSchema"])  # fmt: skip


def _result(value: BaseModel) -> types.CallToolResult:
    structured = value.model_dump(mode="json")
    text = json.dumps(structured, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=structured)


def _refusal(error: AgentError) -> types.CallToolResult:
    """A tool execution error: text only (structured content would have to match the output schema)."""
    text = f"{type(error).__name__}: {error}"
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _unknown_tool(name: str) -> MCPError:
    """The protocol error for a tool name the server does not have (JSON-RPC -32602, as the MCP spec says)."""
    return MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name[:64]!r}; known tools: {', '.join(TOOLS)}")


class _Redactor:
    """Removes the wallet's private keys (hex, any case, with or without ``0x``) from text."""

    def __init__(self, context: ToolContext) -> None:
        wallet = context.wallet
        secrets = [bytes(wallet.account.key).hex(), bytes(wallet.encryption_key).hex()]
        self._pattern = re.compile("|".join(re.escape(secret) for secret in secrets), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._pattern.sub("<redacted>", text)


def build_mcp_server(context: ToolContext, *, name: str = "agentmarket") -> Server[Any]:
    """An MCP server (low-level ``mcp.server.Server``) exposing ``TOOLS``, acting with ``context``'s wallet."""
    tools = [mcp_tool(tool) for tool in TOOLS.values()]
    redact = _Redactor(context)
    one_at_a_time = anyio.Lock()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in TOOLS:
            raise _unknown_tool(params.name)
        try:
            async with one_at_a_time:  # never abandoned mid-payment: the thread finishes even if cancelled
                value = await anyio.to_thread.run_sync(run_tool, context, params.name, params.arguments)
        except AgentError as error:
            return _refusal(error)
        except Exception as exc:
            details = redact("".join(traceback.format_exception(exc)))
            logger.error("MCP tool %s failed unexpectedly:\n%s", params.name, details)
            message = redact(f"{params.name} failed unexpectedly: {type(exc).__name__}: {exc}")
            raise MCPError(code=types.INTERNAL_ERROR, message=message) from None
        return _result(value)

    return Server(name, version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)  # fmt: skip


def run_stdio(context: ToolContext) -> None:
    """Serve the agent's tools over stdio until the client closes stdin (``agentmarket mcp``).

    While serving, ``print`` output goes to stderr: stdout carries only the protocol.
    """
    server = build_mcp_server(context)

    async def serve() -> None:
        sys.stdout.flush()
        async with stdio_server() as (read_stream, write_stream):
            with contextlib.redirect_stdout(sys.stderr):
                await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(serve)
