"""Reentrancy: a hostile token and a hostile payee re-enter buy, release, claim and reclaim and get nothing.

Two attacker contracts live in ``contracts/src/testing``:

- ``MaliciousToken`` calls an armed target from inside ``transfer``/``transferFrom`` *before* any
  balance moves, the moment the paying contract's view of its own balance is stalest;
- ``ReentrantPayee`` (a vault payee or a channel payer) re-enters from the ``onTokenTransfer``
  hook the token calls *after* paying it.

Both record whether their re-entrant call succeeded and its return or revert data, and swallow a
failure so the outer operation completes. Every attack is run next to the same operation done
honestly from the same snapshot: the final balances, vault and channel accounting must be
identical, total supply unchanged, and the re-entrant call must have reverted with
``ReentrancyGuardReentrantCall``. Re-entering a *different* contract (during ``buy``, the vault's
``release``) is not blocked by any guard; that case shows it still pays only what was earned.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.contract import Contract

from marketplace.chain import Chain, ContractRevert, decode_revert_data
from marketplace.chain.contracts import RevenueVaultContract
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import CLAIM_WINDOW, PERPETUAL

PRICE = 1_000_000  # 1 mUSD (6 decimals)
DEPOSIT = 5_000_000
FIRST_VOUCHER = 2_000_000
SECOND_VOUCHER = 3_000_000
ALICE_FUNDS = 10 * PRICE
BOB_BPS, PAYEE_BPS = 6_000, 4_000
TOTAL_SHARES = 100_000_000
HOUR = 3600
#: Explicit gas for attacked operations: an estimate would find the least gas at which the outer
#: call succeeds, which may starve the swallowed inner call into an out-of-gas failure instead of
#: a guard revert. Asserting the exact guard selector below proves the inner call ran.
GAS = 3_000_000
GUARD_ERROR = "ReentrancyGuardReentrantCall"
GUARD_SELECTOR = keccak(text=f"{GUARD_ERROR}()")[:4]


@dataclass
class World:
    """One asset priced in MaliciousToken, paid to bob and to an attacker-owned ReentrantPayee.

    ``mallory`` deploys and controls both attacker contracts; ``keeper`` is the third party who
    calls release, claim and reclaim; the protocol fee goes to ``treasury``.
    """

    chain: Chain
    market: Market
    evil: Contract
    payee: Contract
    treasury: str
    alice: LocalAccount
    bob: LocalAccount
    mallory: LocalAccount
    keeper: LocalAccount
    asset_id: int
    vault: RevenueVaultContract
    fee_bps: int
    supply: int
    channel_id: int | None = None

    # ------------------------------------------------------------------ actions

    def send(self, fn: Any, sender: LocalAccount) -> None:
        self.chain.send(fn, sender, gas=GAS)

    def calldata(self, contract: Contract, name: str, *args: Any) -> str:
        return contract.encode_abi(name, args=list(args))

    def arm_token(self, contract: Contract, name: str, *args: Any) -> None:
        """The next token transfer calls ``contract.name(*args)`` before balances move."""
        self.send(self.evil.functions.arm(contract.address, self.calldata(contract, name, *args)), self.mallory)

    def arm_payee(self, contract: Contract, name: str, *args: Any) -> None:
        """The next payment to the payee makes it call ``contract.name(*args)``."""
        self.send(self.payee.functions.arm(contract.address, self.calldata(contract, name, *args)), self.mallory)

    def payee_execute(self, contract: Contract, name: str, *args: Any) -> None:
        """Mallory makes the payee contract call ``contract.name(*args)`` as itself."""
        fn = self.payee.functions.execute(contract.address, self.calldata(contract, name, *args))
        self.send(fn, self.mallory)

    def release(self, payee: str) -> None:
        self.vault.release(self.keeper, self.evil.address, payee, gas=GAS)

    def buy(self) -> None:
        self.market.marketplace.buy(self.alice, self.asset_id, PRICE, gas=GAS)

    def voucher(self, signer: LocalAccount, amount: int) -> bytes:
        assert self.channel_id is not None
        return self.market.channels.sign_voucher(signer, self.channel_id, amount)

    def claim(self, amount: int, signer: LocalAccount) -> None:
        assert self.channel_id is not None
        voucher = self.voucher(signer, amount)
        self.market.channels.claim(self.keeper, self.channel_id, amount, amount, voucher, gas=GAS)

    def reclaim(self) -> None:
        self.send(self.market.channels.contract.functions.reclaim(self.channel_id), self.keeper)

    # ------------------------------------------------------------------ reads

    def balance(self, address: str) -> int:
        return self.chain.call(self.evil.functions.balanceOf(address))

    def holders(self) -> dict[str, str]:
        """Everyone who holds the token in these scenarios (their sum must be the whole supply)."""
        return {
            "alice": self.alice.address,
            "bob": self.bob.address,
            "treasury": self.treasury,
            "payee": self.payee.address,
            "vault": self.vault.address,
            "channels": self.market.channels.address,
        }

    def state(self) -> dict[str, Any]:
        """Every balance and all money accounting, after checking that the supply is unchanged and
        held by the known holders only (so no token went to the attacker, the keeper, the token
        contract or anyone else)."""
        balances = {name: self.balance(address) for name, address in self.holders().items()}
        supply = self.chain.call(self.evil.functions.totalSupply())
        assert supply == self.supply, "tokens were minted or burned"
        assert sum(balances.values()) == supply, "tokens went to an unexpected holder"
        token = self.evil.address
        payees = {"bob": self.bob.address, "payee": self.payee.address, "treasury": self.treasury}
        license_of = self.market.marketplace.license
        state: dict[str, Any] = {
            "balances": balances,
            "released": {name: self.vault.released(token, address) for name, address in payees.items()},
            "claimable": {name: self.vault.claimable(token, address) for name, address in payees.items()},
            "total_released": self.vault.total_released(token),
            "licenses": {
                name: license_of(self.asset_id, self.holders()[name]).expires_at for name in ("alice", "payee")
            },
        }
        if self.channel_id is not None:
            state["channel"] = self.market.channels.channel(self.channel_id)
        return state

    def cut(self, bps: int, amount: int) -> int:
        """A provider payee's cut of ``amount``, as the vault computes it (fee off the top, rounded down)."""
        return amount * bps * (10_000 - self.fee_bps) // TOTAL_SHARES

    def reentry(self, attacker: Contract) -> tuple[int, bool, bytes]:
        """(count, last succeeded, last return or revert data) recorded by ``attacker``."""
        return (
            self.chain.call(attacker.functions.reentryCount()),
            self.chain.call(attacker.functions.lastReentrySucceeded()),
            bytes(self.chain.call(attacker.functions.lastReentryData())),
        )

    def assert_blocked_by_guard(self, attacker: Contract) -> None:
        """``attacker`` re-entered exactly once and the guard reverted that call."""
        count, succeeded, data = self.reentry(attacker)
        assert (count, succeeded) == (1, False)
        assert data == GUARD_SELECTOR
        assert decode_revert_data(data).error == GUARD_ERROR

    def honest_then_attacked(
        self, arm: Callable[[], None], attack: Callable[[], None], honest: Callable[[], None] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """State after ``honest`` (default: ``attack`` unarmed) and, from the same snapshot, after arm + attack."""
        snapshot = self.chain.snapshot()
        (honest or attack)()
        honest_state = self.state()
        self.chain.revert(snapshot)
        arm()
        attack()
        return honest_state, self.state()


def _build_world(chain: Chain, deployment: Deployment) -> World:
    admin, alice, bob, keeper = chain.accounts[:4]
    mallory = chain.accounts[6]
    market = deployment.market(chain)
    evil = chain.deploy("MaliciousToken", sender=mallory)
    payee = chain.deploy("ReentrantPayee", sender=mallory)
    chain.send(evil.functions.mint(alice.address, ALICE_FUNDS), mallory, gas=GAS)
    chain.send(evil.functions.mint(payee.address, DEPOSIT), mallory, gas=GAS)
    for spender in (market.marketplace.address, market.channels.address):
        chain.send(evil.functions.approve(spender, ALICE_FUNDS), alice, gas=GAS)
    asset_id = market.marketplace.publish(
        bob,
        kind=AssetKind.DATASET,
        content_hash=hashlib.sha256(b"poisoned well").digest(),
        uri="ipfs://reentrancy",
        price=PRICE,
        token=evil.address,
        payees=[(bob.address, BOB_BPS), (payee.address, PAYEE_BPS)],
    )
    treasury = market.marketplace.treasury()
    assert treasury == admin.address
    return World(
        chain=chain,
        market=market,
        evil=evil,
        payee=payee,
        treasury=treasury,
        alice=alice,
        bob=bob,
        mallory=mallory,
        keeper=keeper,
        asset_id=asset_id,
        vault=market.vault(asset_id),
        fee_bps=market.marketplace.fee_bps(),
        supply=ALICE_FUNDS + DEPOSIT,
    )


@pytest.fixture(scope="module")
def base_world(session_chain: Chain, deployment: Deployment) -> Iterator[World]:
    """The attack set-up, built once per backend for this module and removed after it."""
    snapshot = session_chain.snapshot()
    try:
        yield _build_world(session_chain, deployment)
    finally:
        session_chain.revert(snapshot)


@pytest.fixture
def world(chain: Chain, base_world: World) -> World:
    """A fresh copy of the set-up; the ``chain`` fixture reverts whatever the test does."""
    return dataclasses.replace(base_world)


# ---------------------------------------------------------------------- buy


def test_token_reentering_buy_during_buy_is_blocked(world):
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_token(world.market.marketplace.contract, "buy", world.asset_id, PRICE),
        attack=world.buy,
    )
    world.assert_blocked_by_guard(world.evil)
    assert attacked == honest
    assert attacked["balances"]["alice"] == ALICE_FUNDS - PRICE
    assert attacked["balances"]["vault"] == PRICE
    assert attacked["licenses"] == {"alice": PERPETUAL, "payee": 0}
    assert world.market.marketplace.license(world.asset_id, world.evil.address).expires_at == 0


def test_token_reentering_vault_release_during_buy_pays_only_what_was_earned(world):
    """A different contract has its own guard, so this re-entry succeeds: the vault pays bob for
    the purchase already in it, not for the one whose transfer is still under way."""
    world.payee_execute(world.evil, "approve", world.market.marketplace.address, PRICE)
    world.payee_execute(world.market.marketplace.contract, "buy", world.asset_id, PRICE)  # one price in the vault

    def honest() -> None:
        world.release(world.bob.address)
        world.buy()

    honest_state, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_token(world.vault.contract, "release", world.evil.address, world.bob.address),
        attack=world.buy,
        honest=honest,
    )
    count, succeeded, _ = world.reentry(world.evil)
    assert (count, succeeded) == (1, True)
    assert attacked == honest_state
    bob_cut = world.cut(BOB_BPS, PRICE)
    assert attacked["balances"]["bob"] == attacked["released"]["bob"] == bob_cut == 594_000
    assert attacked["claimable"]["bob"] == bob_cut  # for alice's purchase, still in the vault
    assert attacked["balances"]["vault"] + attacked["total_released"] == 2 * PRICE
    assert attacked["balances"]["payee"] == DEPOSIT - PRICE
    assert attacked["licenses"] == {"alice": PERPETUAL, "payee": PERPETUAL}


# ---------------------------------------------------------------------- release


@pytest.mark.parametrize("reentered_payee", ["bob", "payee"], ids=["same-payee", "other-payee"])
def test_token_reentering_release_during_release_is_blocked(world, reentered_payee):
    """The one case where only the guard stands between the attacker and the money: before the
    transfer moves tokens, released[bob] is already counted but the vault still holds bob's cut,
    so totalReceived reads too high. With release compiled without nonReentrant, the same-payee
    re-entry paid bob 946,836 instead of 594,000, and the other-payee one overpaid the payee so
    the vault could no longer pay bob."""
    world.buy()
    target = {"bob": world.bob.address, "payee": world.payee.address}[reentered_payee]
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_token(world.vault.contract, "release", world.evil.address, target),
        attack=lambda: world.release(world.bob.address),
    )
    world.assert_blocked_by_guard(world.evil)
    assert attacked == honest
    bob_cut = world.cut(BOB_BPS, PRICE)
    assert attacked["balances"]["bob"] == attacked["released"]["bob"] == attacked["total_released"] == bob_cut
    assert attacked["balances"]["payee"] == DEPOSIT  # untouched
    assert attacked["balances"]["vault"] == PRICE - bob_cut
    assert attacked["claimable"] == {
        "bob": 0,
        "payee": world.cut(PAYEE_BPS, PRICE),
        "treasury": PRICE * world.fee_bps // 10_000,
    }


@pytest.mark.parametrize("reentered_payee", ["payee", "bob"], ids=["itself", "other-payee"])
def test_payee_reentering_release_when_paid_is_blocked(world, reentered_payee):
    """The malicious payee is notified once paid and tries to release again (to itself or bob)."""
    world.buy()
    target = {"bob": world.bob.address, "payee": world.payee.address}[reentered_payee]
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_payee(world.vault.contract, "release", world.evil.address, target),
        attack=lambda: world.release(world.payee.address),
    )
    world.assert_blocked_by_guard(world.payee)
    assert world.chain.call(world.payee.functions.notificationCount()) == 1  # paid once
    assert attacked == honest
    payee_cut = world.cut(PAYEE_BPS, PRICE)
    assert payee_cut == 396_000
    assert attacked["balances"]["payee"] == DEPOSIT + payee_cut
    assert attacked["released"] == {"bob": 0, "payee": payee_cut, "treasury": 0}
    assert attacked["total_released"] == payee_cut
    assert attacked["balances"]["vault"] == PRICE - payee_cut


def test_payee_releasing_twice_gets_nothing_the_second_time(world):
    """Re-entrant second release blocked, then a plain second release has nothing to send."""
    world.buy()
    world.arm_payee(world.vault.contract, "release", world.evil.address, world.payee.address)
    world.release(world.payee.address)
    world.assert_blocked_by_guard(world.payee)
    with pytest.raises(ContractRevert) as second:
        world.payee_execute(world.vault.contract, "release", world.evil.address, world.payee.address)
    assert second.value.error == "NothingToRelease"
    assert second.value.args_by_name == {"token": world.evil.address, "payee": world.payee.address}
    payee_cut = world.cut(PAYEE_BPS, PRICE)
    state = world.state()
    assert state["balances"]["payee"] == DEPOSIT + payee_cut
    assert state["released"]["payee"] == state["total_released"] == payee_cut


# ---------------------------------------------------------------------- claim


def _open_alice_channel(world: World) -> None:
    channels = world.market.channels.contract
    expiry = world.chain.timestamp() + HOUR
    world.send(
        channels.functions.open(world.asset_id, world.evil.address, DEPOSIT, expiry, world.alice.address,
                                world.keeper.address),
        world.alice,
    )  # fmt: skip
    world.channel_id = world.chain.call(channels.functions.channelCount())


@pytest.mark.parametrize("reentered", ["claim", "reclaim"])
def test_token_reentering_channels_during_claim_is_blocked(world, reentered):
    """During a claim's transfer to the vault, the token re-enters claim with a higher voucher
    (same function) or reclaim (a different function behind the same guard)."""
    _open_alice_channel(world)
    channels = world.market.channels.contract
    args = {
        "claim": (world.channel_id, SECOND_VOUCHER, SECOND_VOUCHER, world.voucher(world.alice, SECOND_VOUCHER)),
        "reclaim": (world.channel_id,),
    }[reentered]
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_token(channels, reentered, *args),
        attack=lambda: world.claim(FIRST_VOUCHER, world.alice),
    )
    world.assert_blocked_by_guard(world.evil)
    assert attacked == honest
    channel = attacked["channel"]
    assert (channel.claimed, channel.deposit, channel.settled) == (FIRST_VOUCHER, DEPOSIT, False)
    assert attacked["balances"]["vault"] == FIRST_VOUCHER
    assert attacked["balances"]["channels"] == DEPOSIT - FIRST_VOUCHER
    assert attacked["balances"]["alice"] == ALICE_FUNDS - DEPOSIT


# ---------------------------------------------------------------------- reclaim


def _payee_channel_claimed_and_expired(world: World) -> None:
    """The payee contract opens a channel (mallory signs, the keeper claims), FIRST_VOUCHER is claimed, it expires
    and its claim window ends."""
    channels = world.market.channels.contract
    world.payee_execute(world.evil, "approve", channels.address, DEPOSIT)
    expiry = world.chain.timestamp() + HOUR
    world.payee_execute(channels, "open", world.asset_id, world.evil.address, DEPOSIT, expiry, world.mallory.address,
                        world.keeper.address)  # fmt: skip
    world.channel_id = world.chain.call(channels.functions.channelCount())
    world.claim(FIRST_VOUCHER, world.mallory)
    world.chain.time_travel(expiry + CLAIM_WINDOW)


def _assert_reclaimed_once(world: World, state: dict[str, Any]) -> None:
    channel = state["channel"]
    assert channel.payer == world.payee.address
    assert (channel.claimed, channel.deposit, channel.settled) == (FIRST_VOUCHER, DEPOSIT, True)
    assert state["balances"]["payee"] == DEPOSIT - FIRST_VOUCHER  # refund of the unclaimed rest, once
    assert state["balances"]["channels"] == 0
    assert state["balances"]["vault"] == FIRST_VOUCHER


@pytest.mark.parametrize("reentered", ["reclaim", "claim"])
def test_payee_reentering_channels_when_refunded_is_blocked(world, reentered):
    """The channel's payer is the malicious payee: refunded by reclaim, it re-enters reclaim
    (same function) or claim with a voucher of its own (a different function)."""
    _payee_channel_claimed_and_expired(world)
    channels = world.market.channels.contract
    args = {
        "reclaim": (world.channel_id,),
        "claim": (world.channel_id, SECOND_VOUCHER, SECOND_VOUCHER, world.voucher(world.mallory, SECOND_VOUCHER)),
    }[reentered]
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_payee(channels, reentered, *args),
        attack=world.reclaim,
    )
    world.assert_blocked_by_guard(world.payee)
    assert world.chain.call(world.payee.functions.notificationCount()) == 1
    assert attacked == honest
    _assert_reclaimed_once(world, attacked)
    with pytest.raises(ContractRevert) as again:
        world.reclaim()
    assert (again.value.error, again.value.args_by_name) == ("AlreadySettled", {"channelId": world.channel_id})


def test_token_reentering_reclaim_during_reclaim_is_blocked(world):
    """Before the refund moves, the token re-enters reclaim on the same channel."""
    _payee_channel_claimed_and_expired(world)
    honest, attacked = world.honest_then_attacked(
        arm=lambda: world.arm_token(world.market.channels.contract, "reclaim", world.channel_id),
        attack=world.reclaim,
    )
    world.assert_blocked_by_guard(world.evil)
    assert attacked == honest
    _assert_reclaimed_once(world, attacked)
