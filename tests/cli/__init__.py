"""The `agentmarket` command as a user runs it: a subprocess, mostly against `agentmarket node` + `agentmarket
serve`."""
