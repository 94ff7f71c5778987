"""Royalties up the lineage: what waits for an account anywhere up its assets' lineage, and the releases
that move it there, computed from on-chain reads with the vaults' own arithmetic.

Every asset has a RevenueVault; a vault's payees are accounts and other assets' vaults (its parents'
royalties, or any payee that happens to be a vault of this marketplace). Tokens reach an account in
hops: a buyer pays the model's vault, ``release(token, parentVault)`` forwards the parent's share, and
the parent vault's own ``release(token, account)`` pays the account. A vault pays each payee
``floor(received * shares / TOTAL_SHARES) - released`` (``RevenueVault.claimable``), so the amount that
reaches an account is exact only when every hop's floor is applied in the order the releases are sent.
This module does exactly that, once, for every user of it (the earnings API, the SDK's withdraw and
release, the CLI):

- :class:`Lineage`: the royalty graph (immutable per asset: payees, shares and token are fixed at
  publish), read from the chain (:meth:`Lineage.of_market`) or given (the server builds it from its
  read model).
- :func:`plan_withdrawal`: for an account, every release that moves money towards it — vault to
  vault up the lineage, children first, then to the account — with the amount each moves, and per
  asset and token what the account can claim now and what waits up the lineage
  (:class:`PayeeSlot`).
- :func:`plan_release`: every vault-to-vault release that pushes one asset's royalties up its
  lineage (anyone may send them).
- :func:`execute`: sends a plan's releases (one transaction each, re-reading each claimable first,
  so a plan is idempotent and a re-run finishes what a failed run left).

Tokens: a vault holds its own asset's token and whatever its descendants are priced in (a model
priced in token B pays its parent's vault in B). Plans release every token that reaches a vault from
the walked lineage, so no royalty strands in an intermediate vault. Tokens sent to a vault by hand
outside the lineage are not looked for.

Bounds: a walk visits at most ``max_assets`` assets (:data:`MAX_WALK_ASSETS`), nearest first; a plan
says how many it left out (``left_out``). Cycles cannot arise through parents (a parent exists before
its child), but a payee may name the vault of an asset published later; a walk visits each asset
once, releases children first where an order exists and, inside a cycle, once per run in descending
asset id (what a cycle leaves stays claimable for the next run). A vault naming itself as a payee is
not followed. Amounts are token base units; shares are out of :data:`TOTAL_SHARES`.
"""

from __future__ import annotations

import heapq
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from marketplace.chain.chain import Chain, with_gas_margin
from marketplace.chain.errors import ChainError, ContractRevert
from marketplace.chain.units import TOTAL_SHARES
from marketplace.errors import AgentmarketError

if TYPE_CHECKING:
    from web3.contract import Contract

    from marketplace.chain.market import Market

#: The most assets one walk visits (nearest first): bounds reads and transactions per plan.
MAX_WALK_ASSETS = 1_000
#: The most gas one release may cost (estimated); TestUSD's cost 57k-108k. A costlier one is not sent.
MAX_RELEASE_GAS = 300_000

# EIP-1167 minimal proxy creation code around the implementation address (OpenZeppelin Clones).
_CLONE_PREFIX = bytes.fromhex("3d602d80600a3d3981f3363d3d373d3d3d363d73")
_CLONE_SUFFIX = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")


def clone_address(implementation: str, salt: int, deployer: str) -> str:
    """The address of OpenZeppelin ``Clones.cloneDeterministic(implementation, bytes32(salt))`` created by
    ``deployer``: EIP-1014 CREATE2 over the EIP-1167 creation code. ``Marketplace.vaultOf(id)`` is this with
    the vault implementation, ``salt = id`` and the Marketplace as deployer."""
    init_code = _CLONE_PREFIX + bytes.fromhex(implementation[2:]) + _CLONE_SUFFIX
    digest = keccak(b"\xff" + bytes.fromhex(deployer[2:]) + salt.to_bytes(32, "big") + keccak(init_code))
    return to_checksum_address(digest[12:])


@dataclass(frozen=True)
class VaultNode:
    """One asset's vault as the lineage sees it (fixed at publish): its token and its payees with their
    shares out of :data:`TOTAL_SHARES` (accounts and other assets' vaults, the protocol fee's treasury too)."""

    asset_id: int
    vault: str
    token: str
    payees: tuple[tuple[str, int], ...]

    def shares_of(self, payee: str) -> int:
        """``payee``'s shares (0 if it is not a payee)."""
        return sum(shares for account, shares in self.payees if account == payee)


@dataclass
class _SharedNodes:
    """Nodes of one Marketplace read from one chain, shared by every :class:`Lineage` bound to it in this
    process. Valid while ``anchor`` (block number, hash) is on the chain: a node never changes once
    published, so only a chain that went back (a snapshot reverted, a restarted node) can stale them;
    ``generation`` counts how often that was noticed and the nodes dropped."""

    nodes: dict[int, VaultNode] = field(default_factory=dict)
    anchor: tuple[int, bytes] | None = None
    generation: int = 0


_SHARED: weakref.WeakKeyDictionary[Chain, dict[str, _SharedNodes]] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


class Lineage:
    """The royalty graph of one Marketplace: which vaults pay which, in which token.

    Built from known nodes (``Lineage(nodes)``, e.g. a server's read model) or bound to the chain
    (:meth:`of_market`), where a node is read the first time it is needed (``paymentTerms`` and the
    vault's ``payees``: two calls, shared by every lineage of the same chain in this process, since both
    are fixed at publish) and vault addresses are computed, not read (:func:`clone_address`). Not
    thread-safe: one per thread or per request.
    """

    def __init__(self, nodes: Iterable[VaultNode] = ()) -> None:
        self._nodes: dict[int, VaultNode] = {}
        self._by_vault: dict[str, int] = {}
        self._market: Market | None = None
        self._implementation = ""
        self._count = 0
        self._children: dict[int, set[int]] | None = None
        self._shared = _SharedNodes()
        self._generation = 0
        for node in nodes:
            self._add(node)
        self._count = max(self._nodes, default=0)

    @classmethod
    def of_market(cls, market: Market) -> Lineage:
        """A lineage read lazily from ``market``'s chain: the assets published so far (:meth:`refresh` adds
        later ones)."""
        lineage = cls()
        lineage._market = market
        marketplace = market.marketplace
        lineage._implementation = market.chain.call(marketplace.contract.functions.vaultImplementation())
        lineage.refresh()
        return lineage

    def refresh(self) -> None:
        """Bound to a chain: learn of assets published since (their vault addresses; nodes load on use).
        If the chain went back since nodes were read (a reverted snapshot, a restarted node), forget them."""
        if self._market is None:
            return
        chain, marketplace = self._market.chain, self._market.marketplace
        head = chain.w3.eth.get_block("latest")
        with _SHARED_LOCK:
            shared = _SHARED.setdefault(chain, {}).setdefault(marketplace.address, _SharedNodes())
            if shared.anchor is not None and not _on_chain(chain, *shared.anchor):
                shared.nodes, shared.generation = {}, shared.generation + 1
            shared.anchor = (head["number"], bytes(head["hash"]))
        if self._generation != shared.generation or self._shared is not shared:
            self._nodes, self._by_vault, self._count, self._children = {}, {}, 0, None
        self._shared, self._generation = shared, shared.generation
        count = marketplace.asset_count()
        for asset_id in range(self._count + 1, count + 1):
            self._by_vault[clone_address(self._implementation, asset_id, marketplace.address)] = asset_id
        if count != self._count:
            self._children = None
        self._count = count

    @property
    def asset_count(self) -> int:
        """How many assets this lineage knows of (ids 1 to this)."""
        return self._count

    def node(self, asset_id: int) -> VaultNode:
        """The node of ``asset_id`` (read from the chain on first use when bound to one).

        Raises KeyError for an asset this lineage does not know.
        """
        found = self._nodes.get(asset_id)
        if found is not None:
            return found
        if self._market is None or not 1 <= asset_id <= self._count:
            raise KeyError(asset_id)
        shared = self._shared.nodes.get(asset_id) if self._generation == self._shared.generation else None
        if shared is not None:
            self._add(shared)
            return shared
        chain, marketplace = self._market.chain, self._market.marketplace
        token, vault = chain.call(marketplace.contract.functions.paymentTerms(asset_id))
        if vault != clone_address(self._implementation, asset_id, marketplace.address):
            raise ChainError(
                f"asset {asset_id}'s vault is {vault}, not the EIP-1167 clone address this lineage expects"
            )
        accounts, shares = chain.call(chain.contract("RevenueVault", vault).functions.payees())
        node = self._add(VaultNode(asset_id, vault, token, tuple(zip(accounts, shares, strict=True))))
        with _SHARED_LOCK:
            if self._generation == self._shared.generation:
                self._shared.nodes[asset_id] = node
        return node

    def asset_of_vault(self, address: str) -> int | None:
        """The asset whose vault is ``address`` (None if it is no vault of this marketplace's assets)."""
        return self._by_vault.get(address)

    def upstream(self, asset_id: int) -> list[int]:
        """Assets whose vaults are payees of ``asset_id``'s vault (parents, and any payee that is a vault),
        in payee order; never the asset itself."""
        found = []
        for payee, _shares in self.node(asset_id).payees:
            up = self._by_vault.get(payee)
            if up is not None and up != asset_id and up not in found:
                found.append(up)
        return found

    def downstream(self, asset_id: int) -> list[int]:
        """Assets whose vaults pay ``asset_id``'s vault (children), ascending. Reads every node once."""
        if self._children is None:
            children: dict[int, set[int]] = {}
            for child in range(1, self._count + 1):
                if child in self._nodes or self._market is not None:
                    for parent in self.upstream(child):
                        children.setdefault(parent, set()).add(child)
            self._children = children
        return sorted(self._children.get(asset_id, ()))

    def slots(self, account: str) -> list[int]:
        """Assets whose vault has ``account`` as a payee, ascending. Reads every node once."""
        account = to_checksum_address(account)
        return [a for a in range(1, self._count + 1) if self._has(a) and self.node(a).shares_of(account)]

    def _has(self, asset_id: int) -> bool:
        return asset_id in self._nodes or (self._market is not None and 1 <= asset_id <= self._count)

    def _add(self, node: VaultNode) -> VaultNode:
        node = VaultNode(
            node.asset_id,
            to_checksum_address(node.vault),
            to_checksum_address(node.token),
            tuple((to_checksum_address(payee), shares) for payee, shares in node.payees),
        )
        self._nodes[node.asset_id] = node
        self._by_vault[node.vault] = node.asset_id
        self._children = None
        return node


def _on_chain(chain: Chain, number: int, block_hash: bytes) -> bool:
    """True if block ``number`` of ``chain`` still has ``block_hash``."""
    try:
        return bytes(chain.w3.eth.get_block(number)["hash"]) == block_hash
    except Exception:  # no such block (any more): the chain went back
        return False


@dataclass(frozen=True)
class Release:
    """One ``RevenueVault.release(token, payee)``: ``asset_id``'s vault sends ``payee`` ``amount`` base units
    of ``token``. ``payee_asset_id`` is the payee's asset when the payee is a vault (a royalty going up
    the lineage), else None. In a plan ``amount`` is what the release will move; once sent, what it moved,
    with its ``transaction`` hash and ``gas_used``."""

    asset_id: int
    vault: str
    token: str
    payee: str
    payee_asset_id: int | None
    amount: int
    transaction: str = ""
    gas_used: int = 0

    def describe(self) -> str:
        """The release in words."""
        to = f"asset {self.payee_asset_id}'s vault" if self.payee_asset_id is not None else self.payee
        return f"{self.amount} of token {self.token} from asset {self.asset_id}'s vault to {to}"


@dataclass(frozen=True)
class PayeeSlot:
    """An account's place in one asset's vault, for one token (base units).

    ``claimable``: what the vault would send it now; ``waiting``: what releases up the lineage (children
    first, floor rounding at every hop) would add to that; ``released``: what it was sent so far;
    ``shares`` out of :data:`TOTAL_SHARES`.
    """

    asset_id: int
    vault: str
    token: str
    shares: int
    claimable: int
    waiting: int
    released: int

    @property
    def total(self) -> int:
        """What a withdrawal gets from this vault in this token: ``claimable + waiting``."""
        return self.claimable + self.waiting


@dataclass(frozen=True)
class LineagePlan:
    """Releases computed at ``block``, children first (amounts as they will move, exactly, if nothing
    else moves meanwhile), and for a withdrawal the account's :class:`PayeeSlot` per asset and token.

    ``walked`` assets were visited; ``left_out`` more were beyond the walk's bound (their money is not
    in the figures). ``unreadable`` names (asset id, token) pairs whose vault could not be read (a token
    whose ``balanceOf`` reverts): left out too.
    """

    block: int
    releases: tuple[Release, ...]
    slots: tuple[PayeeSlot, ...] = ()
    walked: int = 0
    left_out: int = 0
    unreadable: tuple[tuple[int, str], ...] = ()

    @property
    def complete(self) -> bool:
        """True when the walk visited the whole lineage and could read every vault."""
        return self.left_out == 0 and not self.unreadable


class ReleaseIncomplete(AgentmarketError):
    """Some releases of a plan were not sent. ``sent`` lists those that were; ``failed`` the ones that
    failed with the reason; ``stopped`` is True when the run ended at that failure (no ETH for gas, the chain
    unreachable), False when it went on past releases that reverted or cost too much gas. Nothing is lost:
    what was not released is still claimable on chain, and planning and executing again finishes the job
    (a release refused for its token's sake is refused again)."""

    def __init__(self, sent: list[Release], failed: list[tuple[Release, str]], stopped: bool) -> None:
        self.sent, self.failed, self.stopped = sent, failed, stopped
        first, why = failed[0]
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        then = "then stopped at" if stopped else "could not send"
        super().__init__(
            f"{len(sent)} release(s) sent, {then} the release of {first.describe()}: {why}{more}; "
            "what was not released stays claimable on chain"
        )


@dataclass(frozen=True)
class VaultReads:
    """Vault state already read at ``block`` (e.g. in one batch of calls), for a plan to use instead of reading
    it one call at a time: ``received[(vault, token)]`` is ``totalReceived(token)`` (None: it reverted),
    ``released[(vault, token, payee)]`` is ``released(token, payee)`` (checksummed addresses, base units).
    What is not in them is read from the chain at ``block``."""

    block: int
    received: dict[tuple[str, str], int | None] = field(default_factory=dict)
    released: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _ledger(chain: Chain, block: int | None, reads: VaultReads | None) -> _Ledger:
    """A plan's ledger: at ``reads.block`` with those reads in it, else at ``block`` (default: the head)."""
    if reads is not None:
        return _Ledger(chain, reads.block, dict(reads.received), dict(reads.released))
    return _Ledger(chain, chain.block_number() if block is None else block)


def plan_withdrawal(
    chain: Chain,
    lineage: Lineage,
    account: str,
    *,
    max_assets: int = MAX_WALK_ASSETS,
    block: int | None = None,
    reads: VaultReads | None = None,
) -> LineagePlan:
    """What ``account`` would receive if every vault between a paid asset and its payee slots were
    released, children first, and the releases that do it.

    Reads at ``block`` (default: the head), or uses ``reads`` (:class:`VaultReads`) made at one. The walk
    starts at the assets whose vault pays ``account`` and goes down to every asset whose money flows into
    them (at most ``max_assets`` assets, nearest first). Releases are vault-to-vault ones that move money
    towards those slots, then the slots' own releases to ``account``; only releases that move money are
    listed. Each slot (asset, token) with anything claimable, waiting or released is reported, and every
    slot's own token always.
    """
    account = to_checksum_address(account)
    ledger = _ledger(chain, block, reads)
    targets = lineage.slots(account)
    members, left_out = _walk(targets, lineage.downstream, max_assets)
    order = _children_first(members, lineage)
    tokens = _tokens(order, members, lineage)
    releases = _simulate(lineage, ledger, order, tokens, members, account=account, targets=set(targets))
    slots = []
    for asset_id in (t for t in targets if t in members):
        node = lineage.node(asset_id)
        shares = node.shares_of(account)
        for token in sorted(tokens[asset_id], key=lambda t: (t != node.token, t)):
            received = ledger.on_chain_received(node.vault, token)
            if received is None:
                continue
            released = ledger.on_chain_released(node.vault, token, account) if received else 0
            claimable = max(0, received * shares // TOTAL_SHARES - released)
            total = sum(r.amount for r in releases if (r.asset_id, r.token, r.payee) == (asset_id, token, account))
            if token == node.token or claimable or total or released:
                slots.append(PayeeSlot(asset_id, node.vault, token, shares, claimable, total - claimable, released))
    return LineagePlan(ledger.block, tuple(releases), tuple(slots), len(members), left_out,
                       ledger.unreadable_pairs(lineage))  # fmt: skip


def plan_release(
    chain: Chain,
    lineage: Lineage,
    asset_id: int,
    *,
    max_assets: int = MAX_WALK_ASSETS,
    block: int | None = None,
    reads: VaultReads | None = None,
) -> LineagePlan:
    """The vault-to-vault releases that push ``asset_id``'s royalties up its lineage: from its vault to
    every payee that is a vault, then from those up, children first, in every token that reaches each
    vault along the way. Anyone may send them (:func:`execute`). Reads at ``block`` (default: the head), or
    uses ``reads`` (:class:`VaultReads`). Raises AgentmarketError for an asset id that does not exist."""
    try:
        lineage.node(asset_id)
    except KeyError:
        raise AgentmarketError(
            f"asset {asset_id} does not exist (this marketplace has assets 1 to {lineage.asset_count})"
        ) from None
    ledger = _ledger(chain, block, reads)
    members, left_out = _walk([asset_id], lineage.upstream, max_assets)
    order = _children_first(members, lineage)
    tokens = _tokens(order, members, lineage)
    releases = _simulate(lineage, ledger, order, tokens, members, account=None, targets=set())
    return LineagePlan(ledger.block, tuple(releases), (), len(members), left_out, ledger.unreadable_pairs(lineage))


def execute(chain: Chain, caller: LocalAccount, plan: LineagePlan, *, max_gas: int = MAX_RELEASE_GAS) -> list[Release]:
    """Send ``plan``'s releases in order, one transaction each, paid by ``caller``; returns what was sent
    (amounts as moved, with transaction hash and gas used).

    Each release is sent only if the vault's ``claimable`` is still above zero right before it (someone
    else may have released meanwhile, or more money arrived): running a plan twice sends nothing twice.
    A release that would revert, or cost more than ``max_gas`` (a token whose transfer burns gas: anyone
    can price a child asset in one), is skipped and the rest still sent; any other failure (the chain
    unreachable, no ETH left for gas) stops at once. Either way :class:`ReleaseIncomplete` follows,
    naming what was sent and what failed; what was not released stays claimable on chain.
    """
    sent: list[Release] = []
    failed: list[tuple[Release, str]] = []
    contracts: dict[str, Contract] = {}
    for step in plan.releases:
        if step.vault not in contracts:
            contracts[step.vault] = chain.contract("RevenueVault", step.vault)
        vault = contracts[step.vault]
        release = vault.functions.release(step.token, step.payee)
        try:
            if chain.call(vault.functions.claimable(step.token, step.payee)) == 0:
                continue
            gas = chain.estimate_gas(release, caller.address)
            if gas > max_gas:
                failed.append((step, f"its token's transfer would cost {gas:,} gas (more than {max_gas:,}): not sent"))
                continue
            receipt = chain.send(release, caller, gas=with_gas_margin(gas))
        except ContractRevert as exc:
            failed.append((step, str(exc)))
            continue
        except Exception as exc:  # anything else ends the run; the state on chain stays consistent
            failed.append((step, _reason(exc)))
            raise ReleaseIncomplete(sent, failed, stopped=True) from exc
        (event,) = chain.events(vault, receipt, "PaymentReleased")
        sent.append(replace(step, amount=event["amount"], transaction="0x" + bytes(receipt["transactionHash"]).hex(),
                            gas_used=receipt["gasUsed"]))  # fmt: skip
    if failed:
        raise ReleaseIncomplete(sent, failed, stopped=False)
    return sent


# ---------------------------------------------------------------------- internals


def _reason(exc: BaseException) -> str:
    """One line for a failure that is not a revert."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    lowered = text.lower()
    if any(words in lowered for words in ("insufficient funds", "enough balance", "cannot afford")):
        return "the sender has not enough ETH to pay for gas (on a local chain: `agentmarket faucet`)"
    return f"{type(exc).__name__}: {text}"


def _walk(start: list[int], neighbours: Callable[[int], list[int]], limit: int) -> tuple[set[int], int]:
    """Breadth-first from ``start`` over ``neighbours``: at most ``limit`` assets, nearest first; returns
    them and how many more were seen but left out."""
    seen: set[int] = set()
    queue = deque(start)
    left_out: set[int] = set()
    while queue:
        current = queue.popleft()
        if current in seen or current in left_out:
            continue
        if len(seen) >= limit:
            left_out.add(current)
            continue
        seen.add(current)
        queue.extend(n for n in neighbours(current) if n not in seen)
    return seen, len(left_out)


def _children_first(members: set[int], lineage: Lineage) -> list[int]:
    """``members`` ordered so that every vault comes before the vaults it pays (Kahn's algorithm; ties
    and cycles in descending asset id: a parent's id is below its child's)."""
    payers = {m: 0 for m in members}
    for member in members:
        for up in lineage.upstream(member):
            if up in payers:
                payers[up] += 1
    ready = [-m for m, count in payers.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    remaining = set(members)
    while remaining:
        if ready:
            pick = -heapq.heappop(ready)
            if pick not in remaining:
                continue
        else:  # only cycles are left
            pick = max(remaining)
        remaining.discard(pick)
        order.append(pick)
        for up in lineage.upstream(pick):
            if up in remaining:
                payers[up] -= 1
                if payers[up] == 0:
                    heapq.heappush(ready, -up)
    return order


def _tokens(order: list[int], members: set[int], lineage: Lineage) -> dict[int, set[str]]:
    """Per member, the tokens that can reach its vault within ``members``: its own and those of every
    member whose money flows into it (a fixed point, so cycles are covered too)."""
    tokens = {m: {lineage.node(m).token} for m in members}
    changed = True
    while changed:
        changed = False
        for member in order:
            for up in lineage.upstream(member):
                if up in tokens and not tokens[member] <= tokens[up]:
                    tokens[up] |= tokens[member]
                    changed = True
    return tokens


def _simulate(
    lineage: Lineage,
    ledger: _Ledger,
    order: list[int],
    tokens: dict[int, set[str]],
    members: set[int],
    *,
    account: str | None,
    targets: set[int],
) -> list[Release]:
    """Release, in ``order``, every member vault's claimable to its payees that are member vaults (and to
    ``account`` from the ``targets``), in every token reaching it; the releases that move money."""
    releases: list[Release] = []
    for asset_id in order:
        node = lineage.node(asset_id)
        payees: dict[str, tuple[int, int | None]] = {}
        for payee, _shares in node.payees:
            up = lineage.asset_of_vault(payee)
            if up is not None and up != asset_id and up in members:
                payees[payee] = (node.shares_of(payee), up)
        if account is not None and asset_id in targets:
            payees[account] = (node.shares_of(account), lineage.asset_of_vault(account))
        for token in sorted(tokens[asset_id]):
            received = ledger.received(node.vault, token)
            if not received:
                continue
            for payee, (shares, up) in payees.items():
                amount = received * shares // TOTAL_SHARES - ledger.released(node.vault, token, payee)
                if amount > 0:
                    ledger.release(node.vault, token, payee, amount)
                    releases.append(Release(asset_id, node.vault, token, payee, up, amount))
    return releases


@dataclass
class _Ledger:
    """Vault state read on chain at one block (cached), plus the releases simulated on top of it."""

    chain: Chain
    block: int
    _received: dict[tuple[str, str], int | None] = field(default_factory=dict)
    _released: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _inflow: dict[tuple[str, str], int] = field(default_factory=dict)
    _sent: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _contracts: dict[str, Contract] = field(default_factory=dict)

    def _vault(self, vault: str) -> Contract:
        if vault not in self._contracts:
            self._contracts[vault] = self.chain.contract("RevenueVault", vault)
        return self._contracts[vault]

    def on_chain_received(self, vault: str, token: str) -> int | None:
        """``totalReceived(token)`` at the block (None if the token cannot be read)."""
        key = (vault, token)
        if key not in self._received:
            try:
                read = self._vault(vault).functions.totalReceived(token)
                self._received[key] = self.chain.call(read, block=self.block)
            except ContractRevert:
                self._received[key] = None
        return self._received[key]

    def on_chain_released(self, vault: str, token: str, payee: str) -> int:
        """``released(token, payee)`` at the block."""
        key = (vault, token, payee)
        if key not in self._released:
            read = self._vault(vault).functions.released(token, payee)
            self._released[key] = self.chain.call(read, block=self.block)
        return self._released[key]

    def received(self, vault: str, token: str) -> int:
        """What the vault will have received once the simulated releases into it are sent (0 if unreadable)."""
        on_chain = self.on_chain_received(vault, token)
        return 0 if on_chain is None else on_chain + self._inflow.get((vault, token), 0)

    def released(self, vault: str, token: str, payee: str) -> int:
        """What ``payee`` will have been sent by the vault once the simulated releases are sent."""
        return self.on_chain_released(vault, token, payee) + self._sent.get((vault, token, payee), 0)

    def release(self, vault: str, token: str, payee: str, amount: int) -> None:
        """Simulate one release: the payee's released grows and, whoever it is, its balance (a vault's
        ``totalReceived``) grows by ``amount``."""
        self._sent[(vault, token, payee)] = self._sent.get((vault, token, payee), 0) + amount
        self._inflow[(payee, token)] = self._inflow.get((payee, token), 0) + amount

    def unreadable_pairs(self, lineage: Lineage) -> tuple[tuple[int, str], ...]:
        """(asset id, token) of every vault and token whose ``totalReceived`` reverted."""
        return tuple(
            sorted((lineage.asset_of_vault(v) or 0, t) for (v, t), value in self._received.items() if value is None)
        )
