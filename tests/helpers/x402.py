"""x402 on the client side: the x402 package's own client, and the lies a forged gateway tells about its terms."""

from __future__ import annotations

from x402 import x402Client
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units

#: The local chain's CAIP-2 network id.
NETWORK = "eip155:31337"
#: A payment window nobody should sign for (seconds).
TEN_YEARS = 10 * 365 * 86_400
#: What the thief's forged asset costs (base units): 950 times a 0.01 tUSD model call.
FORGED_PRICE = 950 * to_units("0.01")


def stock_client(account, token_address: str, client_class=x402Client):
    """The x402 package's own client, allowed to pay in TestUSD on the local chain."""
    client = client_class()
    register_exact_evm_client(client, EthAccountSigner(account), networks=NETWORK)
    return client.set_spend_controls({"allowed_assets": [{"network": NETWORK, "asset": token_address}]})


def altered(field: str, value):
    def lie(required: dict) -> dict:
        required["accepts"][0][field] = value
        return required

    return lie


def scale_amount(required: dict) -> dict:
    required["accepts"][0]["amount"] = str(int(required["accepts"][0]["amount"]) * 950)
    return required


def version_1_terms(thief: str):
    """An x402 v1 PaymentRequired (which the SDK's stock client would sign for legacy networks)."""

    def lie(required: dict) -> dict:
        accept = required["accepts"][0]
        return {"x402Version": 1, "error": "", "accepts": [{
            "scheme": "exact", "network": "base", "maxAmountRequired": accept["amount"],
            "resource": required["resource"]["url"], "payTo": thief, "maxTimeoutSeconds": 300,
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "extra": {"name": "USD Coin", "version": "2"},
        }]}  # fmt: skip

    return lie


# case: (the lie, given the thief's address and another token's; the field the refusal names)
LIES = {
    "amount x950": (lambda thief, other: scale_amount, "amount"),
    "payTo attacker": (lambda thief, other: altered("payTo", thief), "payTo"),
    "asset another token": (lambda thief, other: altered("asset", other), "asset"),
    "network another chain": (lambda thief, other: altered("network", "eip155:8453"), "network"),
    "scheme other": (lambda thief, other: altered("scheme", "upto"), "scheme"),
    "timeout 10 years": (lambda thief, other: altered("maxTimeoutSeconds", TEN_YEARS), "maxTimeoutSeconds"),
    "domain name wrong": (lambda thief, other: altered("extra", {"name": "Tether USD", "version": "1"}), "extra.name"),
    "permit2 transfer": (
        lambda thief, other: altered("extra", {"name": "Test USD", "version": "1", "assetTransferMethod": "permit2"}),
        "extra.assetTransferMethod",
    ),
    "x402 version 1": (lambda thief, other: version_1_terms(thief), "x402Version"),
}


def forged_deployment(chain, deployment, thief) -> tuple[Deployment, int]:
    """The thief's own copy of the contracts (same code: the chain's code check passes) around the real
    TestUSD, with an asset priced 950x and paid to the thief's vault; returns (deployment, asset id)."""
    forged = deploy_all(chain, thief)
    forged.contracts["TestUSD"] = deployment.contracts["TestUSD"]
    asset_id = forged.market(chain).marketplace.publish(
        thief, kind=AssetKind.MODEL, content_hash=b"\x66" * 32, uri="ipfs://x", price=FORGED_PRICE,
        token=deployment.contracts["TestUSD"].address, payees=[(thief.address, 10_000)],
    )  # fmt: skip
    return forged, asset_id
