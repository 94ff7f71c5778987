"""The agent corridor: whatever a model asks for goes through the guard (``AgentWallet._pay``).

Two halves. Against a live server (uvicorn on 127.0.0.1) over the real chain (both backends): every paying
method of the wallet, and every tool that pays, with caps of 0, raises ``OverBudget`` — nothing signed or
sent (no request reaches the server, no transaction from the agent), no balance moved, nothing pulled from the
owner's spend permission. In the source: no code in ``agents/`` calls a paying method of the SDK (or of a
contract wrapper, or the x402 signer) except inside a ``send`` handed to ``AgentWallet._pay``.
"""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

import agents
from agents import AgentWallet, AuditLedger, Budget, OverBudget
from agents.errors import PaymentRefused
from agents.tools import TOOLS, ToolContext, run_tool
from agents.wallet import ChannelState
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from tests.helpers.chain import fund, owned_agent, publish_model
from tests.helpers.servers import server_app, serving

PRICE = to_units("0.01")
#: Public AgentWallet methods that move no money (all others must be exercised below).
NOT_PAYING = {"reconcile"}
#: Tools that pay (the others read, download what a license already paid for, publish or rate: gas only).
PAYING_TOOLS = {"buy_license", "open_channel", "invoke_model"}


def _echo(payload):
    return {"echo": payload}


@pytest.fixture
def live(chain, deployment, market, tmp_path) -> Iterator[tuple[str, int, int]]:
    """The real server serving one model; yields (url, dataset id, model id), both listed at PRICE."""
    owner = fund(chain, market, 0)
    model = publish_model(market, owner, PRICE)
    dataset = market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=os.urandom(32), uri="data",
                                         price=PRICE, token=market.token.address,
                                         payees=[(owner.address, 10_000)])  # fmt: skip
    with serving(server_app(deployment, chain, tmp_path / "server", {model: _echo})) as url:
        yield url, dataset, model


def test_every_payment_with_caps_of_zero_is_refused_with_nothing_signed(chain, market, live, tmp_path):
    url, dataset, model = live
    owner, agent = fund(chain, market, 100), Account.create()
    chain.send_eth(chain.accounts[0], agent.address, 10**18)
    market.token.mint(chain.accounts[0], agent.address, 10 * PRICE)
    agent_id = owned_agent(chain, market, owner, agent, to_units(50))

    sent: list[httpx.Request] = []
    http = httpx.Client(base_url=url, timeout=60, event_hooks={"request": [sent.append]})
    zero = Budget(run_cap=0, asset_cap=0, call_ceiling=0)
    wallet = AgentWallet.connect(agent, zero, AuditLedger(tmp_path / "ledger.jsonl"), url, chain, http=http,
                                 agent_id=agent_id)  # fmt: skip
    # A channel the agent opened (its whole tUSD locked), so that a voucher call has one to draw from.
    channel = wallet.client.open_channel(model, 10 * PRICE)
    wallet.channels[channel] = ChannelState(model, 10 * PRICE)
    assert market.token.balance_of(agent.address) == 0  # from here, any payment would pull from the owner

    payments = {
        "buy_license": lambda: wallet.buy_license(dataset),
        "open_channel": lambda: wallet.open_channel(model, PRICE),
        "invoke": lambda: wallet.invoke(model, [1], channel),
        "call_over_x402": lambda: wallet.call_over_x402(model, [1]),
        "buy_over_x402": lambda: wallet.buy_over_x402(dataset),
    }
    public = {name for name, _ in inspect.getmembers(AgentWallet, inspect.isfunction) if not name.startswith("_")}
    assert public - NOT_PAYING == set(payments), "a public AgentWallet method is neither tested here nor NOT_PAYING"
    context = ToolContext(wallet, tmp_path / "downloads")
    tools = {
        "buy_license": {"asset_id": dataset},
        "open_channel": {"asset_id": model, "deposit": PRICE},
        "invoke_model": {"model_id": model, "input": [1], "channel_id": channel},
    }
    assert set(tools) == PAYING_TOOLS and set(TOOLS) >= PAYING_TOOLS

    def money() -> tuple[int, ...]:
        vaults = [market.marketplace.vault_of(asset) for asset in (dataset, model)]
        return (
            market.token.balance_of(agent.address), market.token.balance_of(owner.address),
            *(market.token.balance_of(vault) for vault in vaults),
            chain.w3.eth.get_transaction_count(agent.address),
            market.agents.spend_permission(agent_id, market.token.address).spent_in_period,
            market.channels.channel(channel).claimed,
        )  # fmt: skip

    before, sent[:] = money(), []
    refusals = []
    for name, pay in payments.items():
        with pytest.raises(OverBudget) as refused:
            pay()
        refusals.append((name, refused.value.kind))
    for name, arguments in tools.items():
        with pytest.raises(OverBudget) as refused:
            run_tool(context, name, arguments)
        refusals.append((f"tool {name}", refused.value.kind))
    # The price is above a ceiling of 0 for every one of them, before any money is counted.
    assert {kind for _, kind in refusals} == {"per_call"}, refusals
    assert len(refusals) == len(payments) + len(tools)
    assert sent == []  # no request reached the server: nothing was signed for it
    assert money() == before  # nothing moved on chain, nothing pulled from the owner
    assert wallet.client.channel_count(channel) is None  # no voucher signed
    assert wallet.ledger.entries() == [] and wallet.guard.spent == 0 and wallet.outstanding == {}
    assert wallet.channels[channel].drawn == 0 and len(wallet.channels) == 1

    # The same wallet with room pays through the same methods (so the refusals above were the guard's).
    wallet.guard.budget = Budget(run_cap=to_units(1), asset_cap=to_units(1), call_ceiling=PRICE)
    assert wallet.buy_license(dataset).kind == "license"
    assert wallet.invoke(model, [1], channel)[0].output == {"echo": [1]}
    answer, paid = wallet.call_over_x402(model, [2])  # funded from the owner once the 402 passed, then signed
    assert answer.output == {"echo": [2]} and (paid.kind, paid.amount) == ("x402", PRICE)
    assert chain.w3.eth.get_transaction_receipt(paid.ref)["status"] == 1
    # A channel for a dataset is refused before the owner is asked for any money (none is pulled).
    wallet.guard.budget = Budget(run_cap=to_units(1), asset_cap=to_units(1), call_ceiling=to_units(1))
    pulled = market.agents.spend_permission(agent_id, market.token.address).spent_in_period
    with pytest.raises(PaymentRefused, match=f"asset {dataset} is a dataset"):
        wallet.open_channel(dataset, PRICE)
    assert market.agents.spend_permission(agent_id, market.token.address).spent_in_period == pulled
    kinds = ["owner_top_up", "license", "voucher", "owner_top_up", "x402"]
    assert [e.kind for e in wallet.ledger.entries()] == kinds
    assert wallet.ledger.total() == wallet.guard.spent == 2 * PRICE
    assert market.agents.spend_permission(agent_id, market.token.address).spent_in_period == 2 * PRICE


# ---------------------------------------------------------------------- in the source

#: What moves an agent's money: the SDK's paying methods, the contract wrappers' payments, the x402 signer.
PAYING = {
    "buy", "buy_with_authorization", "open_channel", "top_up_channel", "invoke", "download_x402", "_invoke_x402",
    "_x402_payment", "x402_payer", "create_payment_payload", "transfer", "transfer_with_authorization",
    "approve", "spend_from_owner",
}  # fmt: skip
#: Paying names too generic to flag on any receiver: the payment channels contract's (``market.channels.open``).
PAYING_ON = {"channels": {"open", "top_up"}}


def _paying_calls_outside_the_corridor(path: Path) -> list[str]:
    """Calls of a PAYING name in ``path`` that are neither on a wallet (``….wallet.invoke(…)``: the corridor's
    entry) nor inside a ``send`` function of an ``AgentWallet`` method that hands it to ``self._pay``."""
    tree = ast.parse(path.read_text())
    allowed: set[int] = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AgentWallet"):
        for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            sends = {n.name: n for n in method.body if isinstance(n, ast.FunctionDef) and n.name == "send"}
            handed = any(
                isinstance(c, ast.Call) and ast.unparse(c.func) == "self._pay"
                and any(isinstance(a, ast.Name) and a.id == "send" for a in c.args)
                for c in ast.walk(method)
            )  # fmt: skip
            if sends and handed:
                allowed |= {id(n) for n in ast.walk(sends["send"])}
        # A private helper referenced only from allowed code (``_fund``, run by the sends) is allowed too.
        methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_")}
        grew = True
        while grew:
            grew = False
            for name, method in methods.items():
                refs = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute) and ast.unparse(n) == f"self.{name}"]
                if refs and all(id(r) in allowed for r in refs) and id(method) not in allowed:
                    allowed |= {id(n) for n in ast.walk(method)}
                    grew = True
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in allowed:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        receiver = ast.unparse(func.value).split(".")[-1] if isinstance(func, ast.Attribute) else ""
        if name not in PAYING and name not in PAYING_ON.get(receiver, ()):
            continue
        if receiver == "wallet":
            continue
        found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_no_code_in_agents_pays_except_through_the_wallets_corridor():
    package = Path(agents.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {"wallet.py", "tools.py", "runtime.py", "roles.py", "mcp_server.py", "learning.py"} <= {
        m.name for m in modules
    }
    assert [call for module in modules for call in _paying_calls_outside_the_corridor(module)] == []
    # The check sees what it looks for: each paying method's send is where the SDK is called.
    wallet_calls = ast.unparse(ast.parse((package / "wallet.py").read_text()))
    for called in (
        "self.client.buy(",
        "self.client.open_channel(",
        "self.client.invoke(",
        "self.client.download_x402(",
    ):
        assert called in wallet_calls


def test_the_source_check_finds_a_payment_that_bypasses_the_guard(tmp_path):
    """A tool that pays through the client directly, or a wallet method that calls the SDK outside ``send``."""
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        "def buy_license(ctx, args):\n"
        "    ctx.wallet.buy_license(args.asset_id)\n"  # the corridor: allowed
        "    return ctx.client.buy(args.asset_id)\n"  # around it: found
        "class AgentWallet:\n"
        "    def buy_over_x402(self, asset_id):\n"
        "        def send():\n"
        "            return self.client.download_x402(asset_id)\n"  # handed to _pay: allowed
        "        self.client.invoke(asset_id, [1])\n"  # beside it: found
        "        self._top_up(asset_id)\n"  # a helper run outside a send: its payment is found
        "        return self._pay('x402', asset_id, 1, send)\n"
        "    def _top_up(self, asset_id):\n"
        "        self.client.top_up_channel(asset_id, 1)\n"
        "    def _fund(self, amount):\n"  # a helper run only by a send: allowed
        "        self.market.agents.spend_from_owner(self.account, 1, 'token', 'me', amount)\n"
    )
    leaky.write_text(leaky.read_text().replace("download_x402(asset_id)", "download_x402(asset_id, self._fund(1))"))
    found = [line.split(": ")[0] for line in _paying_calls_outside_the_corridor(leaky)]
    assert found == ["leaky.py:3", "leaky.py:8", "leaky.py:12"]
