"""Gas of every money-path operation, measured in one run on the embedded chain (gas is deterministic).

    python scripts/bench_gas.py            # tables
    python scripts/bench_gas.py --json     # machine-readable

Targets (from the contracts issue): buy (approved) <= 1.5x a bare EIP-3009 transfer,
buyWithAuthorization <= 2x, buy gas equal (+-2%) for 1 payee and for 50 payees with 3 upstream
levels, release <= 60k gas whatever the payee count.
"""

from __future__ import annotations

import argparse
import json

from eth_utils import keccak
from rich.console import Console
from rich.table import Table
from web3 import Web3

from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import CLAIM_WINDOW, to_units

HOUR = 3600


def measure() -> dict[str, int]:
    """Run each operation once and return its gas used, by name."""
    gas: dict[str, int] = {}
    with connect("embedded") as chain:
        admin, alice, bob, relayer, carol, session_key = chain.accounts[:6]
        deployment = deploy_all(chain, admin)
        for name, deployed in deployment.contracts.items():
            gas[f"deploy {name}"] = deployed.gas_used
        market = deployment.market(chain)
        token, marketplace, channels = market.token, market.marketplace, market.channels
        deadline = chain.timestamp() + HOUR
        # Fixed nonces and salts keep calldata (and so gas) identical from run to run.
        nonce = [keccak(text=f"bench-{i}") for i in range(8)]
        for account in (alice, bob, carol):
            token.mint(admin, account.address, to_units(10_000))

        gas["TestUSD transfer"] = token.transfer(alice, bob.address, 1)["gasUsed"]
        auth = token.sign_transfer(alice, bob.address, 1, valid_before=deadline, nonce=nonce[0])
        gas["TestUSD transferWithAuthorization (bare 3009)"] = token.transfer_with_authorization(auth, relayer)[
            "gasUsed"
        ]

        def publish(owner, payees, parents=(), duration=0, listed=True):
            fn = marketplace.contract.functions.publish(
                int(AssetKind.DATASET), keccak(text="content"), "ipfs://bench", to_units(1), token.address, duration,
                [p for p, _ in payees], [s for _, s in payees], [p for p, _ in parents], [s for _, s in parents],
                listed,
            )  # fmt: skip
            receipt = chain.send(fn, owner)
            (event,) = chain.events(marketplace.contract, receipt, "AssetPublished")
            return event["assetId"], receipt["gasUsed"]

        simple, gas["publish (1 payee)"] = publish(alice, [(alice.address, 10_000)])
        level1, _ = publish(bob, [(bob.address, 10_000)])
        level2, _ = publish(bob, [(bob.address, 9_000)], [(level1, 1_000)])
        level3, gas["publish (1 payee, 1 parent)"] = publish(bob, [(bob.address, 9_000)], [(level2, 1_000)])
        strangers = [(Web3.to_checksum_address(f"0x{i:040x}"), 200) for i in range(1, 50)]
        wide, gas["publish (50 payees, 1 parent)"] = publish(alice, [(alice.address, 100), *strangers], [(level3, 100)])
        timed, _ = publish(alice, [(alice.address, 10_000)], duration=HOUR)
        # What the SDK and CLI do: publish unlisted, upload, then the owner lists it; compared with a listed
        # publish of the same asset id (the first publish above also pays for assetCount's first write).
        before = chain.snapshot()
        _, gas["publish listed (1 payee, a later asset)"] = publish(alice, [(alice.address, 10_000)])
        chain.revert(before)
        pending, gas["publish unlisted (1 payee, a later asset)"] = publish(
            alice, [(alice.address, 10_000)], listed=False
        )
        gas["setListed (list after the upload)"] = marketplace.set_listed(alice, pending, True)["gasUsed"]
        gas["publishVersion (delists until relisted)"] = marketplace.publish_version(
            alice, pending, keccak(text="content v2"), "ipfs://bench-v2"
        )["gasUsed"]

        token.approve(carol, marketplace.address, to_units(10_000))
        gas["buy (approved, 1 payee)"] = marketplace.buy(carol, simple, to_units(1))["gasUsed"]
        gas["buy (approved, 50 payees + 3 upstream levels)"] = marketplace.buy(carol, wide, to_units(1))["gasUsed"]
        gas["buyWithPermit"] = marketplace.buy_with_permit(bob, simple, to_units(1), deadline)["gasUsed"]
        purchase = marketplace.sign_purchase(carol, timed, valid_before=deadline, salt=nonce[1])
        gas["buyWithAuthorization (relayed 3009)"] = marketplace.buy_with_authorization(purchase, relayer)["gasUsed"]

        simple_vault, wide_vault = market.vault(simple), market.vault(wide)
        gas["release (first to a payee)"] = simple_vault.release(relayer, token.address, alice.address)["gasUsed"]
        wide_vault.release(relayer, token.address, alice.address)
        token.mint(admin, session_key.address, to_units(10))
        token.approve(session_key, marketplace.address, to_units(10))
        marketplace.buy(session_key, simple, to_units(1))
        marketplace.buy(session_key, wide, to_units(1))
        gas["release (steady state, 1-payee vault)"] = simple_vault.release(relayer, token.address, alice.address)[
            "gasUsed"
        ]
        gas["release (steady state, 52-payee vault)"] = wide_vault.release(relayer, token.address, alice.address)[
            "gasUsed"
        ]

        token.approve(carol, channels.address, to_units(10_000))

        def open_channel() -> tuple[int, int]:
            fn = channels.contract.functions.open(simple, token.address, to_units(5), deadline, session_key.address,
                                                  relayer.address)  # fmt: skip
            receipt = chain.send(fn, carol)
            (opened,) = chain.events(channels.contract, receipt, "ChannelOpened")
            return opened["channelId"], receipt["gasUsed"]

        channel_id, gas["channel open"] = open_channel()
        ceiling = channels.sign_voucher(session_key, channel_id, to_units(3))  # one voucher, two claims under it
        gas["channel claim (first)"] = channels.claim(relayer, channel_id, to_units(3), to_units(1), ceiling)["gasUsed"]
        gas["channel claim (later)"] = channels.claim(relayer, channel_id, to_units(3), to_units(2), ceiling)["gasUsed"]
        # carol bought `wide` (license proof) and paid `simple` 2 tUSD through the channel (channel proof)
        rate = market.reputation.give_feedback
        gas["giveFeedback (license proof)"] = rate(
            carol, subject_kind=SubjectKind.ASSET, subject_id=wide, paid_asset_id=wide, value=80, tag1="quality"
        )["gasUsed"]
        gas["giveFeedback (channel proof)"] = rate(
            carol, subject_kind=SubjectKind.ASSET, subject_id=simple, paid_asset_id=simple, channel_id=channel_id,
            value=80, tag1="quality",
        )["gasUsed"]  # fmt: skip
        closing, _ = open_channel()
        gas["channel close (owner ends service)"] = channels.close(alice, closing)["gasUsed"]
        settling, _ = open_channel()
        final = channels.sign_voucher(session_key, settling, to_units(1))
        gas["channel claimAndSettle"] = channels.claim_and_settle(relayer, settling, to_units(1), to_units(1), final)[
            "gasUsed"
        ]
        chain.time_travel(deadline + CLAIM_WINDOW)
        channels.reclaim(relayer, closing)  # so that the measured reclaim empties the contract, as it did before
        gas["channel reclaim"] = channels.reclaim(relayer, channel_id)["gasUsed"]

        register = market.agents.contract.get_function_by_signature("register(string)")("https://agent.example/1")
        receipt = chain.send(register, alice)
        gas["agent register (with URI)"] = receipt["gasUsed"]
        (registered,) = chain.events(market.agents.contract, receipt, "Registered")
        agent_id, agents = registered["agentId"], market.agents
        binding_deadline = chain.timestamp() + 60
        binding = agents.sign_wallet_binding(session_key, agent_id, alice.address, binding_deadline)
        agents.set_agent_wallet(alice, agent_id, session_key.address, binding_deadline, binding.packed)
        token.approve(alice, agents.address, to_units(10))
        gas["grantSpendPermission"] = agents.grant_spend_permission(
            alice, agent_id, token.address, to_units(5), 86_400, wallet=session_key.address
        )["gasUsed"]
        spend = agents.spend_from_owner
        gas["spendFromOwner (first)"] = spend(session_key, agent_id, token.address, bob.address, 1)["gasUsed"]
        gas["spendFromOwner (later)"] = spend(session_key, agent_id, token.address, bob.address, 1)["gasUsed"]
    return gas


def ratios(gas: dict[str, int]) -> dict[str, tuple[float, str]]:
    """The issue's targets as measured ratios (value, target)."""
    bare = gas["TestUSD transferWithAuthorization (bare 3009)"]
    one, wide = gas["buy (approved, 1 payee)"], gas["buy (approved, 50 payees + 3 upstream levels)"]
    return {
        "buy (approved) / bare 3009": (gas["buy (approved, 1 payee)"] / bare, "<= 1.5"),
        "buyWithAuthorization / bare 3009": (gas["buyWithAuthorization (relayed 3009)"] / bare, "<= 2.0"),
        "buy 50 payees+3 levels / buy 1 payee": (wide / one, "1.00 +- 0.02"),
        "release steady 52 payees / 1 payee": (
            gas["release (steady state, 52-payee vault)"] / gas["release (steady state, 1-payee vault)"],
            "1.00, and <= 60k gas",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    gas = measure()
    measured = ratios(gas)
    if args.json:
        print(
            json.dumps({"chain": "embedded", "gas": gas, "ratios": {k: v for k, (v, _t) in measured.items()}}, indent=2)
        )
        return
    console = Console()
    table = Table(title="gas per operation (embedded chain, one run)")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    for name, used in gas.items():
        table.add_row(name, f"{used:,}")
    console.print(table)
    targets = Table(title="targets")
    for column in ("ratio", "measured", "target"):
        targets.add_column(column)
    for name, (value, target) in measured.items():
        targets.add_row(name, f"{value:.3f}", target)
    console.print(targets)


if __name__ == "__main__":
    main()
