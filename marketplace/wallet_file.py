"""An account kept in an encrypted keystore (v3) file, plus the X25519 key derived from it.

The X25519 key used for sealed downloads is derived from the Ethereum key
(sha256("agentmarket-x25519" || key)), so one password-protected file holds both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from marketplace.errors import AgentmarketError

PASSWORD_ENV = "AGENTMARKET_PASSWORD"
#: scrypt cost of new keystores. The default is eth-account's (2**18, ~2 s to unlock); tests lower
#: it through this variable to keep dozens of CLI runs fast. Never lower it for real keys.
SCRYPT_N_ENV = "AGENTMARKET_KEYSTORE_SCRYPT_N"
DEFAULT_WALLET = Path(".agentmarket") / "wallet.json"


def create_wallet(path: Path, password: str) -> LocalAccount:
    """Create a new random account and save it encrypted at ``path`` (refuses to overwrite)."""
    if path.exists():
        raise AgentmarketError(f"{path} already exists; move it away or pass another --wallet")
    account = Account.create()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        cost = int(os.environ.get(SCRYPT_N_ENV, 2**18))
        json.dump(Account.encrypt(account.key, password, kdf="scrypt", iterations=cost), handle)
    return account


def load_wallet(path: Path, password: str) -> LocalAccount:
    """Decrypt the account at ``path``."""
    if not path.is_file():
        raise AgentmarketError(f"no wallet at {path}; create one with `agentmarket wallet new`")
    try:
        keystore = json.loads(path.read_text())
    except ValueError:
        raise AgentmarketError(f"{path} is not a keystore file") from None
    try:
        return Account.from_key(Account.decrypt(keystore, password))
    except ValueError:
        raise AgentmarketError(f"wrong password for {path} (set {PASSWORD_ENV} or type it at the prompt)") from None


def encryption_keypair(account: LocalAccount) -> PrivateKey:
    """The X25519 keypair derived from ``account`` (its public half goes in the agent's metadata)."""
    return PrivateKey(hashlib.sha256(b"agentmarket-x25519" + bytes(account.key)).digest())
