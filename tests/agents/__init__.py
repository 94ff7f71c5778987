"""Agents: the wallet and its budget guard, tools, runtime and roles, MCP, learning and royalty rules."""
