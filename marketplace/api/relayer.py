"""The gateway's settlement key: the account that claims its channels and pays the gas of its settlements.

A channel names the key allowed to claim it (``receiverAuthorizer``), and each gateway keeps its own
ledger of the calls it answered. Two gateways that settle with the same key but keep separate ledgers
would both accept the same channel and each serve the same credit; so every gateway has a key of its
own unless its operator names one:

- ``AGENTMARKET_RELAYER_KEY`` set: that key (the operator's; a key shared by two gateways with separate
  data directories is unsupported: see the README's security model);
- otherwise: a key created on first start in the data directory (``settlement.key``, 32 random bytes,
  mode 0600, like ``auth.key``) and kept there, so a restarted gateway claims what it answered before.
  On a local dev chain (chain id 31337) it is topped up with gas money from the last dev account at
  every start (to :data:`LOCAL_GAS_TOP_UP` wei when it holds less than :data:`LOCAL_GAS_MINIMUM`); on any
  other chain its operator funds it (a warning names it while it holds nothing).

``GET /v1/payments`` advertises the key's address, which channel payers name as ``receiverAuthorizer``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from marketplace.api.settings import Settings
from marketplace.chain import LOCAL_CHAIN_ID, Chain
from marketplace.errors import AgentmarketError
from marketplace.keyfile import load_or_create_secret

log = logging.getLogger("agentmarket.api")

#: The file, in the data directory, that holds a gateway's own settlement key.
SETTLEMENT_KEY_FILE = "settlement.key"
#: On a local dev chain, a settlement key holding less than this (wei) is topped up at start...
LOCAL_GAS_MINIMUM = 10**18
#: ... to this balance (wei): 10 ETH, some 100,000 settlements at local gas prices.
LOCAL_GAS_TOP_UP = 10 * 10**18
_FUNDING_ATTEMPTS = 3


def settlement_account(settings: Settings, chain: Chain) -> LocalAccount:
    """The key this gateway settles with (see the module docstring); funded for gas on a local dev chain.

    Raises :class:`AgentmarketError` when ``AGENTMARKET_RELAYER_KEY`` is not a private key, when the key
    file is damaged, or when a local chain's dev account cannot pay for the key's gas.
    """
    if settings.relayer_key is not None:
        try:
            return Account.from_key(settings.relayer_key.get_secret_value())
        except (ValueError, TypeError):
            raise AgentmarketError("AGENTMARKET_RELAYER_KEY is not a valid private key (want 0x + 64 hex)") from None
    account = own_settlement_key(settings.data_dir)
    if chain.chain_id == LOCAL_CHAIN_ID:
        fund_for_gas(chain, account.address)
    elif chain.balance(account.address) == 0:
        log.warning(
            "the settlement key %s (in %s) holds no gas money on chain %d: fund it, or set AGENTMARKET_RELAYER_KEY; "
            "until then x402 payments and channel claims cannot settle",
            account.address,
            settings.data_dir / SETTLEMENT_KEY_FILE,
            chain.chain_id,
        )
    return account


def own_settlement_key(data_dir: Path) -> LocalAccount:
    """The gateway's own key in ``data_dir`` (``settlement.key``), created on first use.

    Raises :class:`AgentmarketError` if the file is not a usable 32-byte secp256k1 key.
    """
    path = data_dir / SETTLEMENT_KEY_FILE
    secret = load_or_create_secret(path)
    try:
        if len(secret) != 32:
            raise ValueError
        return Account.from_key(secret)
    except (ValueError, TypeError):
        raise AgentmarketError(
            f"{path} is not a 32-byte private key; restore it from a backup (it may still have channels to "
            f"claim), or set AGENTMARKET_RELAYER_KEY"
        ) from None


def fund_for_gas(chain: Chain, address: str) -> None:
    """On a local dev chain, top ``address`` up to :data:`LOCAL_GAS_TOP_UP` wei from the last dev account if
    it holds less than :data:`LOCAL_GAS_MINIMUM` (one transaction, or none).

    Raises :class:`AgentmarketError` on any other chain, or when the dev account cannot pay.
    """
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise AgentmarketError(f"chain id {chain.chain_id} is not a local dev chain: fund {address} yourself")
    funder = chain.accounts[-1]
    for _ in range(_FUNDING_ATTEMPTS):
        held = chain.balance(address)
        if held >= LOCAL_GAS_MINIMUM:
            return
        try:  # (a failure may be a nonce taken by another gateway funding its own key at the same moment)
            chain.send_eth(funder, address, LOCAL_GAS_TOP_UP - held)
        except Exception as exc:  # any node error: try again, then say what to do
            failure = type(exc).__name__
        else:
            failure = "the transfer did not arrive"
    raise AgentmarketError(
        f"could not fund the settlement key {address} with gas money from the dev account {funder.address} on "
        f"this local chain ({failure}); fund it yourself or set AGENTMARKET_RELAYER_KEY"
    )
