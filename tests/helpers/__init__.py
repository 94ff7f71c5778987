"""What the test modules share (no test module imports another one: ``tests/test_layout.py`` checks it).

- ``cli``: the ``agentmarket`` command as a subprocess, free ports, one-line error checks.
- ``stack``: ``agentmarket node`` + ``agentmarket serve`` as real processes (the CLI tests' module fixture).
- ``servers``: the real app under uvicorn on 127.0.0.1, hostile HTTP servers, wire bodies an honest gateway sends.
- ``chain``: on-chain set-up (an anvil world, funded accounts, published assets, agents) and revert checks.
- ``scripted``: a scriptable raw HTTP gateway (lying, endless or malformed answers).
- ``raw_http``: raw-socket requests and what the server answered.
- ``x402``: the stock x402 client and the lies a forged gateway tells.
- ``agents``: the agent tests' prices, budgets and wallet/tool set-up.
- ``fake_gateway``, ``openai_stub``, ``postgres``: a lying x402 gateway, an OpenAI-protocol stub upstream,
  a throwaway PostgreSQL server; ``siwe_oracle_driver.py`` is a script run in a venv with PyPI ``siwe``.
"""
