"""Gas of every money-path operation, measured in one run on the embedded chain (gas is deterministic).

python scripts/bench_gas.py            # table
python scripts/bench_gas.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json

from eth_utils import keccak
from rich.console import Console
from rich.table import Table

from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.token import to_units


def measure() -> dict[str, int]:
    """Run each operation once and return its gas used, by name."""
    gas: dict[str, int] = {}
    with connect("embedded") as chain:
        admin, alice, bob, relayer = chain.accounts[:4]
        deployment = deploy_all(chain, admin)
        for name, deployed in deployment.contracts.items():
            gas[f"deploy {name}"] = deployed.gas_used
        token = deployment.token(chain)
        deadline = chain.timestamp() + 3600
        # Fixed nonces keep calldata (and so gas) identical from run to run.
        nonce = [keccak(text=f"bench-{i}") for i in range(4)]

        gas["TestUSD mint (first, to empty account)"] = token.mint(admin, alice.address, to_units(1000))["gasUsed"]
        token.mint(admin, bob.address, 1)
        gas["TestUSD transfer (to non-empty account)"] = token.transfer(alice, bob.address, 1)["gasUsed"]
        gas["TestUSD approve"] = token.approve(alice, bob.address, 1)["gasUsed"]
        gas["TestUSD permit"] = token.permit(alice, relayer.address, 5, deadline, relayer)["gasUsed"]
        auth = token.sign_transfer(alice, bob.address, 1, valid_before=deadline, nonce=nonce[0])
        gas["TestUSD transferWithAuthorization (bytes)"] = token.transfer_with_authorization(auth, relayer)["gasUsed"]
        auth = token.sign_transfer(alice, bob.address, 1, valid_before=deadline, nonce=nonce[1])
        gas["TestUSD transferWithAuthorization (v,r,s)"] = token.transfer_with_authorization(auth, relayer, vrs=True)[
            "gasUsed"
        ]
        auth = token.sign_transfer(alice, bob.address, 1, valid_before=deadline, nonce=nonce[2], receive=True)
        gas["TestUSD receiveWithAuthorization"] = token.receive_with_authorization(auth, bob)["gasUsed"]
        gas["TestUSD cancelAuthorization"] = token.cancel_authorization(alice, nonce[3], relayer)["gasUsed"]
    return gas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    gas = measure()
    if args.json:
        print(json.dumps({"chain": "embedded", "gas": gas}, indent=2))
        return
    table = Table(title="gas per operation (embedded chain, one run)")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    for name, used in gas.items():
        table.add_row(name, f"{used:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
