"""Which deployment a client trusts on each chain, so that a server naming other contracts is refused.

A client checks every payment against "the chain" — but the contracts it reads prices and vaults from are
the ones the server's manifest names (``GET /v1/deployment``), and anyone can deploy a copy of the contracts
around the real token. So a client must know which deployment it trusts before it talks to a server. The
CLI decides it this way (:func:`connect_trusted`), for the chain it is connected to — its identity, chain id
and genesis hash (:class:`~marketplace.chain.identity.ChainIdentity`), since a restarted local node is a new
chain with the same chain id and addresses:

1. a manifest the user names (``$AGENTMARKET_MANIFEST``): only that deployment;
2. otherwise the local manifest (``.agentmarket/deployment.json``, what ``agentmarket node`` writes) if it is
   for this chain (its chain id, and every contract's code in place), and the deployment pinned for this
   chain in the pin file: the server must follow one of them;
3. if neither exists: trust on first use — the server's deployment is pinned for this chain;
4. ``trust_server`` (CLI ``--trust-server``): the server's deployment is trusted and pinned, whatever the rest
   says (the deliberate way to follow another deployment).

The pin file (``trusted-deployments.json`` next to the wallet) maps a chain identity string to the pinned
manifest, the server it came from, when and how; it is JSON a person can edit or delete entries from.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment, DeploymentError, load_deployment, parse_manifest, read_manifest
from marketplace.chain.identity import ChainIdentity
from marketplace.client.sdk import MarketplaceClient, UntrustedDeployment, deployment_difference
from marketplace.errors import AgentmarketError

__all__ = ["PIN_FILE", "TRUST_ENV", "DeploymentPins", "Pin", "connect_trusted"]

#: Name of the pin file, in the wallet's directory.
PIN_FILE = "trusted-deployments.json"
#: The environment variable the CLI reads as ``--trust-server`` (1, true or yes).
TRUST_ENV = "AGENTMARKET_TRUST_SERVER"


@dataclass(frozen=True)
class Pin:
    """A deployment trusted on one chain: the manifest, the server it was first seen at, when (Unix seconds)
    and how (``"first use"`` or ``"--trust-server"``)."""

    deployment: Deployment
    server: str
    pinned_at: int
    how: str

    def describe(self) -> str:
        """``pinned on first use of http://… on 2026-11-29``."""
        day = time.strftime("%Y-%m-%d", time.gmtime(self.pinned_at))
        return f"pinned on {self.how} of {self.server} on {day}"


class DeploymentPins:
    """The pin file at ``path``: one trusted deployment per chain identity (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, identity: ChainIdentity) -> Pin | None:
        """The deployment pinned for ``identity``, or None."""
        entry = self._read().get(str(identity))
        if entry is None:
            return None
        try:
            deployment = parse_manifest(entry["deployment"], f"{self.path} ({identity.short})")
            return Pin(deployment, str(entry["server"]), int(entry["pinned_at"]), str(entry["how"]))
        except (KeyError, TypeError, ValueError, DeploymentError) as exc:
            raise AgentmarketError(
                f"{self.path} has a malformed entry for {identity} ({exc}); fix or remove that entry"
            ) from None

    def pin(self, identity: ChainIdentity, deployment: Deployment, *, server: str, how: str) -> Pin:
        """Trust ``deployment`` on ``identity`` from now on (replacing any earlier pin for it)."""
        pin = Pin(deployment, server, int(time.time()), how)
        entries = self._read()
        entries[str(identity)] = {"deployment": deployment.to_json(), "server": server, "pinned_at": pin.pinned_at,
                                  "how": how}  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise AgentmarketError(f"cannot write the pin file {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(entries, out, indent=1, sort_keys=True)
                out.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return pin

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise AgentmarketError(f"{self.path} is not a pin file ({exc}); fix or remove it") from None
        if not isinstance(entries, dict):
            raise AgentmarketError(f"{self.path} is not a pin file (not a JSON object); fix or remove it")
        return entries


def connect_trusted(
    base_url: str,
    account: LocalAccount,
    chain: Chain,
    *,
    pins: DeploymentPins,
    manifest: Path | None = None,
    local_manifest: Path | None = None,
    trust_server: bool = False,
    **options: Any,
) -> MarketplaceClient:
    """A :class:`MarketplaceClient` for a server following a deployment this user trusts (see the module).

    ``manifest`` is the one the user names (only it is trusted), ``local_manifest`` the one found in the working
    directory (trusted when it is for this chain), ``pins`` the pin file; ``trust_server`` trusts and pins the
    server's deployment. ``options`` go to :meth:`MarketplaceClient.connect`. Raises
    :class:`UntrustedDeployment` (one line: which deployment the server follows, which one is trusted and
    where it comes from, and how to trust the server deliberately) before anything is signed.
    """
    if manifest is not None and not trust_server:
        return MarketplaceClient.connect(base_url, account, chain, trusted=read_manifest(manifest), **options)
    client = MarketplaceClient.connect(base_url, account, chain, **options)
    served = client.deployment
    identity = client.chain_identity
    if trust_server:
        pins.pin(identity, served, server=base_url, how="--trust-server")
        return client
    trusted: list[tuple[Deployment, str]] = []
    if local_manifest is not None and local_manifest.is_file():
        # A manifest of another chain (or whose contracts are not on this one) says nothing about this chain.
        with contextlib.suppress(DeploymentError):
            trusted.append((load_deployment(local_manifest, chain), f"your manifest {local_manifest}"))
    pin = pins.get(identity)
    if pin is not None:
        trusted.append((pin.deployment, f"{pin.describe()} in {pins.path}"))
    if not trusted:
        pins.pin(identity, served, server=base_url, how="first use")
        return client
    for deployment, _source in trusted:
        if deployment_difference(deployment, served) is None:
            return client
    client.close()
    deployment, source = trusted[0]
    raise UntrustedDeployment(
        f"the server at {base_url} follows another deployment than the one you trust on {identity.short} "
        f"({source}): {deployment_difference(deployment, served)}; refusing to use it, nothing was signed. To trust "
        f"that server deliberately, run the command again with --trust-server (or {TRUST_ENV}=1), which pins its "
        f"deployment in {pins.path}, or edit that file"
    )
