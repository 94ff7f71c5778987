"""An account kept in an encrypted keystore (v3) file, plus the X25519 key derived from it.

The X25519 key used for sealed downloads is derived from the Ethereum key
(sha256("agentmarket-x25519" || key)), so one password-protected file holds both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from marketplace.errors import AgentmarketError

PASSWORD_ENV = "AGENTMARKET_PASSWORD"
#: scrypt cost of new keystores. The default is eth-account's (2**18, ~2 s to unlock); tests lower
#: it through this variable to keep dozens of CLI runs fast. Never lower it for real keys.
SCRYPT_N_ENV = "AGENTMARKET_KEYSTORE_SCRYPT_N"
DEFAULT_WALLET = Path(".agentmarket") / "wallet.json"
#: Largest key-derivation cost a keystore may ask for (scrypt n; pbkdf2 c): above it, unlocking it would
#: take more memory or time than any wallet this code writes (a hostile file cannot hang the CLI).
MAX_SCRYPT_N = 2**20
MAX_PBKDF2_ROUNDS = 10_000_000
#: Largest keystore file read, in bytes (a keystore is about 500 bytes).
MAX_KEYSTORE_BYTES = 32 * 1024


def scrypt_cost() -> int:
    """The scrypt cost ``n`` of new keystores: $AGENTMARKET_KEYSTORE_SCRYPT_N (a power of 2, 2 to 2**20), else 2**18."""
    text = os.environ.get(SCRYPT_N_ENV)
    if text is None:
        return 2**18
    try:
        cost = int(text)
    except ValueError:
        cost = 0
    if cost < 2 or cost > MAX_SCRYPT_N or cost & (cost - 1):
        raise AgentmarketError(f"{SCRYPT_N_ENV} must be a power of 2 from 2 to {MAX_SCRYPT_N}, not {text!r}")
    return cost


def create_wallet(path: Path, password: str) -> LocalAccount:
    """Create a new random account and save it encrypted at ``path`` (refuses to overwrite)."""
    if path.exists():
        raise AgentmarketError(f"{path} already exists; move it away or pass another --wallet")
    account = Account.create()
    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_cost())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AgentmarketError(f"{path} already exists; move it away or pass another --wallet") from None
    except OSError as exc:
        raise AgentmarketError(f"cannot create the wallet {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(keystore, handle)
    return account


def read_keystore(path: Path) -> dict[str, Any]:
    """The encrypted keystore (Web3 Secret Storage, version 3) at ``path``, checked but not decrypted.

    :class:`AgentmarketError` (one line) when there is no file, it cannot be read, it is larger than
    ``MAX_KEYSTORE_BYTES``, it is not JSON, or it is JSON but not a version 3 keystore (or asks for a
    key-derivation cost above ``MAX_SCRYPT_N`` / ``MAX_PBKDF2_ROUNDS``).
    """
    if not path.is_file():
        raise AgentmarketError(f"no wallet at {path}; create one with `agentmarket wallet new`")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_KEYSTORE_BYTES + 1)
        if len(raw) > MAX_KEYSTORE_BYTES:
            raise AgentmarketError(f"{path} is not a keystore file (over {MAX_KEYSTORE_BYTES} bytes)")
        keystore = json.loads(raw)
    except OSError as exc:
        raise AgentmarketError(f"cannot read the wallet {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise AgentmarketError(f"{path} is not a keystore file (not JSON)") from None
    problem = _keystore_problem(keystore)
    if problem:
        raise AgentmarketError(f"{path} is JSON but not an encrypted keystore (version 3): {problem}")
    return keystore


def _keystore_problem(keystore: Any) -> str | None:
    """What makes ``keystore`` not a usable version 3 keystore, or None."""
    if not isinstance(keystore, dict):
        return f"a JSON {type(keystore).__name__}, not an object"
    if keystore.get("version") != 3:
        return f"version is {keystore.get('version')!r}, not 3"
    crypto = keystore.get("crypto", keystore.get("Crypto"))
    if not isinstance(crypto, dict):
        return "no crypto object"
    missing = [key for key in ("cipher", "cipherparams", "ciphertext", "kdf", "kdfparams", "mac") if key not in crypto]
    if missing:
        return f"crypto has no {', '.join(missing)}"
    params = crypto["kdfparams"]
    if not isinstance(params, dict):
        return "kdfparams is not an object"
    if crypto["kdf"] == "scrypt":
        cost = params.get("n")
        if not isinstance(cost, int) or not 2 <= cost <= MAX_SCRYPT_N or cost & (cost - 1):
            return f"scrypt n is {cost!r}, not a power of 2 up to {MAX_SCRYPT_N}"
    elif crypto["kdf"] == "pbkdf2":
        rounds = params.get("c")
        if not isinstance(rounds, int) or not 1 <= rounds <= MAX_PBKDF2_ROUNDS:
            return f"pbkdf2 c is {rounds!r}, not 1 to {MAX_PBKDF2_ROUNDS}"
    else:
        return f"unknown kdf {crypto['kdf']!r} (want scrypt or pbkdf2)"
    return None


def load_wallet(path: Path, password: str | Callable[[], str]) -> LocalAccount:
    """Decrypt the account at ``path`` with ``password`` (or a function asked for it once the file checked out).

    :class:`AgentmarketError` for a missing, unreadable or malformed file (see :func:`read_keystore`) or a
    wrong password.
    """
    keystore = read_keystore(path)
    secret = password() if callable(password) else password
    try:
        return Account.from_key(Account.decrypt(keystore, secret))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise AgentmarketError(f"wrong password for {path} (set {PASSWORD_ENV} or type it at the prompt)") from None
        raise AgentmarketError(f"{path} is not a usable keystore: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise AgentmarketError(f"{path} is not a usable keystore ({type(exc).__name__}: {exc})") from None


def encryption_keypair(account: LocalAccount) -> PrivateKey:
    """The X25519 keypair derived from ``account`` (its public half goes in the agent's metadata)."""
    return PrivateKey(hashlib.sha256(b"agentmarket-x25519" + bytes(account.key)).digest())
