"""The chain layer: one narrow interface over the embedded py-evm chain, anvil, and any RPC URL.

Here: connecting (:func:`connect`) and the :class:`Chain` with its one transaction pipeline, and the errors
it raises. Beside it: ``contracts`` (one typed wrapper per contract), ``records`` (what they return),
``units`` (decimals, bps, vault shares, CAIP-2 ids), ``market`` (the :class:`~.market.Market` facade over a
deployment), ``deployment``, ``lineage``, ``eip712``, ``identity``.
"""

from marketplace.chain.artifacts import Artifact, artifact_names, load_artifact
from marketplace.chain.backends import (
    DEV_MNEMONIC,
    LOCAL_CHAIN_ID,
    AnvilNode,
    anvil_chain,
    connect,
    dev_accounts,
    embedded_chain,
    rpc_chain,
)
from marketplace.chain.chain import Chain, RawCall, to_address
from marketplace.chain.errors import ChainError, ContractRevert, InsufficientFunds, decode_revert_data

__all__ = [
    "DEV_MNEMONIC",
    "LOCAL_CHAIN_ID",
    "AnvilNode",
    "Artifact",
    "Chain",
    "ChainError",
    "ContractRevert",
    "InsufficientFunds",
    "RawCall",
    "anvil_chain",
    "artifact_names",
    "connect",
    "decode_revert_data",
    "dev_accounts",
    "embedded_chain",
    "load_artifact",
    "rpc_chain",
    "to_address",
]
