"""Which chain off-chain state belongs to: the chain id and the genesis block hash.

A local chain started again (``agentmarket node`` restarted) keeps chain id 31337 and, deployed by the
same dev account at the same nonces, the same contract addresses: only its genesis block hash
(anvil timestamps genesis when it starts) tells the new chain from the old. Everything a server keeps
about a chain — the read model, the voucher ledger, the content store — is bound to an identity string
that starts with ``eip155:<chain id>/genesis:0x<hash>`` (CAIP-2 for the chain id) and is checked
against it, at start and while it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketplace.chain.units import CAIP2_PATTERN, caip2
from marketplace.errors import AgentmarketError

if TYPE_CHECKING:
    from marketplace.chain.chain import Chain

_PREFIX = re.compile(CAIP2_PATTERN + r"/genesis:(?P<genesis>0x[0-9a-fA-F]{1,64})")


@dataclass(frozen=True)
class ChainIdentity:
    """A chain: ``chain_id`` (EIP-155) and ``genesis``, the hash of its block 0 (``0x`` + 64 hex digits)."""

    chain_id: int
    genesis: str

    @classmethod
    def of(cls, chain: Chain) -> ChainIdentity:
        """The identity of the chain ``chain`` is connected to now (one ``eth_getBlockByNumber(0)``)."""
        genesis = "0x" + bytes(chain.w3.eth.get_block(0)["hash"]).hex()
        return cls(chain.chain_id, genesis)

    @classmethod
    def parse(cls, text: str) -> ChainIdentity | None:
        """The identity an identity string starts with (``eip155:<id>/genesis:0x<hash>…``), or None."""
        match = _PREFIX.match(text.strip())
        if match is None:
            return None
        return cls(int(match["chain_id"]), match["genesis"].lower())

    def __str__(self) -> str:
        return f"{caip2(self.chain_id)}/genesis:{self.genesis}"

    @property
    def short(self) -> str:
        """For people: ``chain 31337, genesis 0x1a2b3c4d…``."""
        return f"chain {self.chain_id}, genesis {self.genesis[:10]}…"

    @property
    def slug(self) -> str:
        """For file names: ``eip155-31337-genesis-1a2b3c4d5e6f``."""
        return f"eip155-{self.chain_id}-genesis-{self.genesis.removeprefix('0x')[:12]}"


class ChainReplaced(AgentmarketError):
    """The chain behind the RPC URL is no longer the one this state belongs to (a restarted node, another chain).

    ``expected`` is the chain the state was bound to, ``actual`` the one that answers now; the message
    says what to do.
    """

    def __init__(self, expected: ChainIdentity, actual: ChainIdentity, detail: str) -> None:
        super().__init__(detail)
        self.expected, self.actual, self.detail = expected, actual, detail

    @classmethod
    def while_serving(cls, expected: ChainIdentity, actual: ChainIdentity, rpc_url: str | None) -> ChainReplaced:
        """The error of a server whose chain was replaced under it: what happened and what to do."""
        where = f"the chain at {rpc_url}" if rpc_url else "the chain"
        return cls(
            expected,
            actual,
            f"{where} was replaced ({actual.short} answers where this server followed {expected.short}: a restarted "
            "node?); it serves nothing more until it is restarted: run `agentmarket serve` again, which archives the "
            "old chain's read model, voucher ledger and content (add --reset if it says answered calls are unclaimed)",
        )
