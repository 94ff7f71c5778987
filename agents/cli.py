"""``agentmarket agent run`` and ``agentmarket mcp``: run an agent with a wallet and caps, or serve its
tools over the Model Context Protocol.

Loaded by the ``agentmarket`` CLI as a plugin (entry point group ``agentmarket.cli``; written against
:mod:`marketplace.cli.plugin`), so the ``marketplace`` package never imports ``agents``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from agents.errors import AgentError
from agents.wallet import KEY_ENV, AgentWallet, AuditLedger, Budget, account_from_env
from marketplace.chain import rpc_chain
from marketplace.chain.units import format_units, to_units
from marketplace.cli.plugin import (
    DEFAULT_RPC,
    DEFAULT_SERVER,
    DEFAULT_WALLET,
    JsonOption,
    RpcOption,
    ServerOption,
    WalletOption,
    console,
    group,
    password,
    print_json,
)
from marketplace.errors import AgentmarketError
from marketplace.wallet_file import PASSWORD_ENV, load_wallet

AGENT_DIR = Path(".agentmarket") / "agent"

BudgetOption = Annotated[str, typer.Option("--budget", help="Most tUSD this run may spend (run cap).")]
AssetCapOption = Annotated[
    str | None, typer.Option("--asset-cap", help="Most tUSD on any one asset (default: the budget).")
]
CeilingOption = Annotated[
    str | None, typer.Option("--call-ceiling", help="Highest price accepted for one license or call (default: budget).")
]
LedgerOption = Annotated[Path, typer.Option("--ledger", help="Audit ledger (JSONL) of every payment signed.")]


def agent_wallet(
    wallet: Path, budget: str, asset_cap: str | None, call_ceiling: str | None, ledger: Path, server: str, rpc: str
) -> AgentWallet:
    """The agent's wallet: the key in $AGENTMARKET_AGENT_KEY if set, else the keystore file; with its caps,
    paying through a client of the server at ``server`` on the chain at ``rpc``."""
    caps = Budget(run_cap=_units(budget, "--budget"), asset_cap=_units(asset_cap or budget, "--asset-cap"),
                  call_ceiling=_units(call_ceiling or budget, "--call-ceiling"))  # fmt: skip
    account = account_from_env() if os.environ.get(KEY_ENV) else load_wallet(wallet, password())
    return AgentWallet.connect(account, caps, AuditLedger(ledger), server, rpc_chain(rpc))


def _units(value: str, option: str) -> int:
    try:
        return to_units(value)
    except AgentmarketError:
        raise AgentError(f"{option} {value!r} is not an amount of tUSD (want a number like 10 or 2.5)") from None


def agent_run(
    role: Annotated[str, typer.Option("--role", help="buyer (classify held-out rows by paying for model calls).")],
    brain: Annotated[str, typer.Option("--brain", help="llm, greedy, bandit (UCB), epsilon-greedy or random.")],
    budget: BudgetOption = "10",
    asset_cap: AssetCapOption = None,
    call_ceiling: CeilingOption = None,
    llm_url: Annotated[str | None, typer.Option("--llm-url", help="OpenAI-compatible base URL (…/v1).")] = None,
    model: Annotated[str, typer.Option("--model", help="LLM model name.")] = "default",
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Env var with the LLM API key.")] = "OPENAI_API_KEY",
    dataset: Annotated[str, typer.Option("--dataset", help="Where the queries come from (scikit-learn).")] = "digits",
    queries: Annotated[int, typer.Option("--queries", min=1, help="How many rows to classify.")] = 20,
    value: Annotated[str, typer.Option("--value", help="tUSD a right answer is worth.")] = "0.5",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the brain and the queries.")] = 0,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Stop after this many steps.")] = 200,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    ledger: LedgerOption = AGENT_DIR / "ledger.jsonl",
    trace: Annotated[Path | None, typer.Option("--trace", help="JSONL trace (default: .agentmarket/agent/).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run an agent with a wallet and caps until its task is done, its budget is spent, or Ctrl-C."""
    from agents.brains import LLMBrain, policy_brain
    from agents.learning import load_source, split_holdout
    from agents.roles import BuyerAgent, ClassificationTask

    if role != "buyer":
        raise AgentError(f"--role {role!r} is not runnable from the CLI; use --role buyer (providers: asset publish)")
    if brain == "llm":
        if not llm_url:
            raise AgentError(
                "--brain llm needs --llm-url (an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1)"
            )
        thinker: Any = LLMBrain(base_url=llm_url, model=model, api_key=os.environ.get(api_key_env, "not-needed"))
    else:
        thinker = policy_brain(brain, seed=seed)
    the_wallet = agent_wallet(wallet, budget, asset_cap, call_ceiling, ledger, server, rpc)
    X, y = load_source(dataset, seed=seed)
    _, _, X_test, y_test = split_holdout(X, y, 0.3, seed)
    task = ClassificationTask(X_test[:queries], y_test[:queries], value_per_success=_units(value, "--value"))
    trace_path = trace or AGENT_DIR / f"trace-{the_wallet.run}.jsonl"

    if as_json:
        buyer = BuyerAgent(the_wallet, thinker, task, trace_path=trace_path)
        report = buyer.run(max_steps=max_steps)
    else:
        view = _LiveView(the_wallet, task)
        with Live(view.render(), console=console, refresh_per_second=4) as live:
            buyer = BuyerAgent(the_wallet, thinker, task, trace_path=trace_path,
                               on_step=lambda record: live.update(view.render(record)))  # fmt: skip
            report = buyer.run(max_steps=max_steps)
    result = {**vars(report), "utility": buyer.utility(), "trace": str(trace_path), "ledger": str(ledger),
              "address": the_wallet.address}  # fmt: skip
    if as_json:
        print_json(result)
        return
    console.print(
        f"stopped: {report.reason} after {report.steps} steps; spent {format_units(report.spent)} tUSD, "
        f"{task.correct}/{task.index} right, utility {format_units(buyer.utility())} tUSD"
    )
    console.print(f"trace: {trace_path}  ledger: {ledger}", style="dim")


class _LiveView:
    """The live table of a run: steps, answers, spend, budget and balance."""

    def __init__(self, wallet: AgentWallet, task: Any) -> None:
        self.wallet, self.task = wallet, task
        self.last: list[str] = []

    def render(self, record: Any = None) -> Table:
        if record is not None:
            tools = ", ".join(a["tool"] for a in record.actions)
            errors = [o["error"]["type"] for o in record.outcomes if not o["ok"]]
            refused = f" (refused: {', '.join(errors)})" if errors else ""
            self.last = [*self.last, f"{record.step}: {tools}{refused}"][-5:]
        table = Table(title=f"agent {self.wallet.address}", show_header=False)
        balance = self.wallet.client.market.token.balance_of(self.wallet.address)
        rows = [
            ("answered", f"{self.task.index} ({self.task.correct} right)"),
            ("spent (committed)", f"{format_units(self.wallet.guard.spent)} tUSD"),
            ("budget left", f"{format_units(self.wallet.guard.remaining)} tUSD"),
            ("balance", f"{format_units(balance)} tUSD"),
            ("recent steps", "\n".join(self.last) or "-"),
        ]
        for name, text in rows:
            table.add_row(name, text)
        return table


def mcp(
    budget: BudgetOption = "10",
    asset_cap: AssetCapOption = None,
    call_ceiling: CeilingOption = None,
    wallet: WalletOption = DEFAULT_WALLET,
    server: ServerOption = DEFAULT_SERVER,
    rpc: RpcOption = DEFAULT_RPC,
    ledger: LedgerOption = AGENT_DIR / "ledger.jsonl",
    download_dir: Annotated[Path, typer.Option("--download-dir", help="Where downloads go.")] = AGENT_DIR / "downloads",
) -> None:
    """Serve the marketplace tools over MCP (stdio) with this wallet and its caps.

    The wallet's key comes from $AGENTMARKET_AGENT_KEY, or the keystore file unlocked with
    $AGENTMARKET_PASSWORD: never from a prompt, since stdin carries the MCP protocol.
    """
    from agents.mcp_server import run_stdio
    from agents.tools import ToolContext

    if not os.environ.get(KEY_ENV) and not os.environ.get(PASSWORD_ENV):
        raise AgentError(
            f"agentmarket mcp reads the MCP protocol on stdin, so it cannot prompt for a password: set {PASSWORD_ENV} "
            f"(the password of {wallet}) or {KEY_ENV} (the agent's hex private key)"
        )
    run_stdio(ToolContext(agent_wallet(wallet, budget, asset_cap, call_ceiling, ledger, server, rpc), download_dir))


def register(app: typer.Typer) -> None:
    """Add ``agent run`` (to the ``agent`` group) and ``mcp`` to the ``agentmarket`` CLI."""
    group(app, "agent").command("run")(agent_run)
    app.command("mcp")(mcp)


__all__ = ["agent_wallet", "register"]
