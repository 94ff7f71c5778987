"""``agentmarket demo``: the story so far, on a chain of the user's choice.

Today it shows the payment primitive everything else is built on: an agent that holds tUSD but no
ETH pays a provider with an EIP-3009 authorization, and a relayer puts it on chain and pays the gas.
Every number printed is read back from the chain.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.token import format_units, to_units


def run_demo(chain_target: str, *, as_json: bool, console: Console) -> dict:
    """Deploy, mint, pay with a relayed EIP-3009 authorization, and report balances."""
    say = (lambda _msg: None) if as_json else (lambda msg: console.print(f"• {msg}"))
    with connect(chain_target) as chain:
        deployer, agent, provider, relayer = chain.accounts[:4]
        say(f"connected to the {chain.kind} chain (chain id {chain.chain_id})")
        deployment = deploy_all(chain, deployer)
        token = deployment.token(chain)
        say(f"deployed TestUSD at {token.address}")
        token.mint(deployer, agent.address, to_units(100))
        say("faucet minted 100 tUSD to the agent")
        parties = {"agent": agent.address, "provider": provider.address, "relayer": relayer.address}
        before = {name: (token.balance_of(a), chain.balance(a)) for name, a in parties.items()}
        price = to_units("12.5")
        auth = token.sign_transfer(agent, provider.address, price, valid_before=chain.timestamp() + 600)
        say("the agent signed an EIP-3009 authorization for 12.5 tUSD to the provider (no transaction, no gas)")
        receipt = token.transfer_with_authorization(auth, relayer)
        say(f"the relayer submitted it in block {receipt['blockNumber']} ({receipt['gasUsed']:,} gas)")
        after = {name: (token.balance_of(a), chain.balance(a)) for name, a in parties.items()}

    result = {
        "chain_id": chain.chain_id,
        "chain": chain.kind,
        "token": token.address,
        "payment": {
            "from": agent.address,
            "to": provider.address,
            "amount": str(price),
            "tx_hash": "0x" + bytes(receipt["transactionHash"]).hex(),
            "gas_used": receipt["gasUsed"],
        },
        "balances": {
            name: {
                "address": parties[name],
                "tusd_before": str(before[name][0]),
                "tusd_after": str(after[name][0]),
                "eth_spent_wei": str(before[name][1] - after[name][1]),
            }
            for name in parties
        },
    }
    if as_json:
        console.print_json(json.dumps(result))
        return result
    table = Table(title="balances after the relayed payment (read from chain)")
    for column in ("party", "address", "tUSD before", "tUSD after", "ETH gas paid"):
        table.add_column(column, justify="right" if "tUSD" in column or "ETH" in column else "left")
    for name in parties:
        (tusd_before, eth_before), (tusd_after, eth_after) = before[name], after[name]
        table.add_row(
            name,
            parties[name],
            format_units(tusd_before),
            format_units(tusd_after),
            f"{(eth_before - eth_after) / 10**18:.6f}",
        )
    console.print(table)
    return result
