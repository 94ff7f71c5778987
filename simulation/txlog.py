"""A run's money, payment by payment: every token transfer read back from the chain, every paid call from the
run's ledger, and every party's revenue round by round.

Engine-independent: :class:`RunRecord` is filled by ``simulation.engine.run_simulation`` while the run's
chain is still up, from

- the chain itself: every ERC-20 ``Transfer(from, to, value)`` log of the payment token (EIP-20) from the
  run's first block to its last, read with batched ``eth_getLogs``; each payer and payee named
  ("producer 3's dataset vault", "consumer 0", "payment channels"), each transfer given its kind
  (:data:`KINDS`) and the round whose blocks hold it (round 0 is the set-up before the first round, round
  ``rounds + 1`` the end: claims, royalty releases, withdrawals, fees);
- the run's own ledger: the paid calls (vouchers, off chain: they move no token until the settler claims
  them), counted per round, consumer and model.

:func:`write_records` writes ``transactions.csv``, ``vouchers.csv`` and ``round_revenue.csv`` (and each as
``.parquet`` beside it when pyarrow is installed: ``pip install 'agentmarket[parquet]'``).
"""

from __future__ import annotations

import bisect
import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from web3 import Web3

from marketplace.chain.lineage import clone_address
from simulation.reference import Decisions, decisions_of, split_revenue

if TYPE_CHECKING:
    from simulation.engine import _Run
    from simulation.world import World

#: keccak256("Transfer(address,address,uint256)"), the topic of every ERC-20 transfer (EIP-20).
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
#: Most blocks one ``eth_getLogs`` call asks for.
LOG_BATCH_BLOCKS = 5_000

#: What a transfer is, from who pays whom.
KINDS = {
    "mint": "new tokens for a party's budget (from the zero address)",
    "license": "a builder buys a dataset license: builder -> the dataset's vault",
    "channel deposit": "a consumer opens a payment channel: consumer -> payment channels",
    "voucher claim": "the settler claims a channel's vouchers: payment channels -> the model's vault",
    "channel refund": "what a closed channel did not spend: payment channels -> consumer",
    "royalty release": "a model's vault forwards royalties: model vault -> a parent's dataset vault",
    "withdrawal": "a payee withdraws from a vault: vault -> producer or builder",
    "fee": "the protocol fee released: vault -> protocol treasury",
    "other": "any other transfer of the payment token",
}


@dataclass(frozen=True)
class Transfer:
    """One ERC-20 transfer of the payment token: where it is on chain, who paid whom (address and name), how
    much (base units), its kind (:data:`KINDS`) and the round whose blocks hold it."""

    round: int
    phase: str
    block: int
    tx_hash: str
    log_index: int
    kind: str
    payer: str
    payer_name: str
    payee: str
    payee_name: str
    amount: int


@dataclass(frozen=True)
class VoucherTotal:
    """The calls consumer ``consumer`` paid model ``model_id`` for in round ``round``: how many and their total
    (base units; one off-chain voucher per call)."""

    round: int
    consumer: int
    consumer_address: str
    model_id: int
    builder: int
    calls: int
    amount: int


@dataclass(frozen=True)
class RoundRevenue:
    """What ``party`` earned in round ``round`` (base units): what it could withdraw had everything paid
    through that round been released, less the same through the round before (so a party's rounds sum to its
    revenue, to the unit). Round 0 is the set-up (license sales); ``license`` + ``calls`` = ``revenue``, where
    ``calls`` is a producer's royalties, a builder's share of its model's calls, or the protocol's fee on them."""

    round: int
    party: str
    role: str
    index: int
    address: str
    license: int
    calls: int
    revenue: int


@dataclass
class RunRecord:
    """What ``run_simulation`` records of a run for its data products (filled by :meth:`capture`)."""

    transfers: list[Transfer] = field(default_factory=list)
    vouchers: list[VoucherTotal] = field(default_factory=list)
    round_revenue: list[RoundRevenue] = field(default_factory=list)
    decisions: Decisions | None = None
    names: dict[str, str] = field(default_factory=dict)

    def capture(
        self, world: World, run: _Run, round_ends: Sequence[int], voucher_marks: Sequence[Sequence[int]]
    ) -> None:
        """Read the run's transfers from the chain and its calls from its ledger. ``round_ends[0]`` is the last
        block of the set-up, ``round_ends[r]`` that of round ``r``; ``voucher_marks[r][c]`` how many calls
        consumer ``c`` had paid by the end of round ``r`` (``voucher_marks[0]`` all zeros)."""
        self.names = party_names(world, run)
        kinds = _roles(world, run)
        last = world.chain.block_number()
        rounds = len(round_ends) - 1
        self.transfers = [
            _transfer(log, self.names, kinds, round_ends, rounds)
            for log in transfer_logs(world, world.first_block, last)
        ]
        self.vouchers = _voucher_totals(run, voucher_marks)
        vault = _vault_addresses(world)
        asset_of = {vault(asset): asset for asset in run.datasets}
        licenses = [(t.round, asset_of[t.payee], t.amount) for t in self.transfers if t.kind == "license"]
        self.decisions = decisions_of(run.scenario.protocol.fee_bps, run.datasets,
                                      sorted(run.models, key=lambda m: m.index), licenses,
                                      [asdict(row) for row in self.vouchers], rounds)  # fmt: skip
        self.round_revenue = round_revenue(self.decisions, run)


def transfer_logs(world: World, first: int, last: int) -> list[dict[str, Any]]:
    """Every ``Transfer`` log of the payment token in blocks ``first..last``, in chain order (batched
    ``eth_getLogs``, :data:`LOG_BATCH_BLOCKS` blocks a call)."""
    w3, token = world.chain.w3, world.market.token.address
    logs: list[dict[str, Any]] = []
    for start in range(first, last + 1, LOG_BATCH_BLOCKS):
        stop = min(start + LOG_BATCH_BLOCKS - 1, last)
        logs += w3.eth.get_logs({"fromBlock": start, "toBlock": stop, "address": token, "topics": [TRANSFER_TOPIC]})
    return sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))


def _address(topic: Any) -> str:
    """The address in an indexed ``address`` topic (its last 20 bytes), checksummed."""
    return Web3.to_checksum_address(bytes(topic)[-20:])


def _hex(value: Any) -> str:
    """A hash as ``0x…`` hex."""
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return text if text.startswith("0x") else "0x" + text


def party_names(world: World, run: _Run) -> dict[str, str]:
    """A readable name for every address a run's money touches: parties, vaults, contracts, treasury."""
    market, vault = world.market, _vault_addresses(world)
    names = {ZERO_ADDRESS: "mint (TestUSD)", world.deployer.address: "protocol treasury",
             market.channels.address: "payment channels", market.marketplace.address: "marketplace"}  # fmt: skip
    for index, party in enumerate(run.producers):
        names[party.address] = f"producer {index}"
    for index, party in enumerate(run.builders):
        names[party.address] = f"builder {index}"
    for index, party in enumerate(run.consumers):
        names[party.address] = f"consumer {index}"
    for index, asset_id in enumerate(run.datasets):
        names[vault(asset_id)] = f"producer {index}'s dataset vault"
    for model in run.models:
        names[vault(model.model_id)] = f"builder {model.index}'s model vault"
    return names


def _vault_addresses(world: World) -> Any:
    """A function from asset id to its vault's address (an EIP-1167 clone, computed: no call per asset)."""
    marketplace = world.market.marketplace
    implementation = world.chain.call(marketplace.contract.functions.vaultImplementation())
    return lambda asset_id: clone_address(implementation, asset_id, marketplace.address)


def _roles(world: World, run: _Run) -> dict[str, str]:
    """The role of every address for classifying transfers."""
    market, vault = world.market, _vault_addresses(world)
    roles = {ZERO_ADDRESS: "zero", world.deployer.address: "treasury", market.channels.address: "channels"}
    roles |= {p.address: "producer" for p in run.producers} | {p.address: "builder" for p in run.builders}
    roles |= {p.address: "consumer" for p in run.consumers}
    roles |= {vault(a): "dataset vault" for a in run.datasets}
    roles |= {vault(m.model_id): "model vault" for m in run.models}
    return roles


#: (payer role, payee role) -> kind.
_KIND_OF = {
    ("builder", "dataset vault"): "license",
    ("consumer", "channels"): "channel deposit",
    ("channels", "model vault"): "voucher claim",
    ("channels", "consumer"): "channel refund",
    ("model vault", "dataset vault"): "royalty release",
    ("model vault", "builder"): "withdrawal",
    ("dataset vault", "producer"): "withdrawal",
    ("model vault", "treasury"): "fee",
    ("dataset vault", "treasury"): "fee",
}


def _transfer(log: dict[str, Any], names: dict[str, str], roles: dict[str, str], round_ends: Sequence[int],
              rounds: int) -> Transfer:  # fmt: skip
    payer, payee = _address(log["topics"][1]), _address(log["topics"][2])
    block = int(log["blockNumber"])
    number = bisect.bisect_left(round_ends, block)  # 0: set-up; r: round r; rounds + 1: the end
    phase = "setup" if number == 0 else ("end" if number > rounds else "round")
    kind = "mint" if payer == ZERO_ADDRESS else _KIND_OF.get((roles.get(payer, ""), roles.get(payee, "")), "other")
    amount = int.from_bytes(bytes(log["data"]), "big")
    return Transfer(round=number, phase=phase, block=block, tx_hash=_hex(log["transactionHash"]),
                    log_index=int(log["logIndex"]), kind=kind, payer=payer, payer_name=names.get(payer, payer),
                    payee=payee, payee_name=names.get(payee, payee), amount=amount)  # fmt: skip


def _voucher_totals(run: _Run, marks: Sequence[Sequence[int]]) -> list[VoucherTotal]:
    """Calls per (round, consumer, model), from each consumer's ledger cut at the round marks."""
    builder_of = {m.model_id: m.index for m in run.models}
    totals: list[VoucherTotal] = []
    for consumer, party in enumerate(run.consumers):
        paid = run.vouchers(consumer)
        for number in range(1, len(marks)):
            per_model: dict[int, list[int]] = defaultdict(lambda: [0, 0])
            for model_id, amount in paid[marks[number - 1][consumer] : marks[number][consumer]]:
                per_model[model_id][0] += 1
                per_model[model_id][1] += amount
            totals += [VoucherTotal(number, consumer, party.address, model_id, builder_of[model_id], count, amount)
                       for model_id, (count, amount) in sorted(per_model.items())]  # fmt: skip
    return sorted(totals, key=lambda row: (row.round, row.consumer, row.model_id))


def round_revenue(decisions: Decisions, run: _Run) -> list[RoundRevenue]:
    """Every party's revenue per round: the difference of what it could withdraw through consecutive rounds."""
    rows: list[RoundRevenue] = []
    before = None
    for number in range(len(decisions.calls) + 1):
        now = decisions.revenue(number)
        for index, asset in enumerate(decisions.datasets):
            license = now.producer_license[asset] - (before.producer_license[asset] if before else 0)
            total = now.producer[asset] - (before.producer[asset] if before else 0)
            rows.append(RoundRevenue(number, f"producer {index}", "producer", index, run.producers[index].address,
                                     license, total - license, total))  # fmt: skip
        for model in decisions.models:
            total = now.builder.get(model.builder, 0) - (before.builder.get(model.builder, 0) if before else 0)
            rows.append(RoundRevenue(number, f"builder {model.builder}", "builder", model.builder,
                                     run.builders[model.builder].address, 0, total, total))  # fmt: skip
        fee = now.fee - (before.fee if before else 0)
        # the fee on license sales: the fee on this round's licenses alone; the rest is the fee on calls
        sold = decisions.licenses[number] if number < len(decisions.licenses) else {}
        license_fee = split_revenue(decisions.fee_bps, sold, (), {}).fee
        rows.append(RoundRevenue(number, "protocol", "protocol", 0, "", license_fee, fee - license_fee, fee))
        before = now
    return rows


# --------------------------------------------------------------------------------------------------
# Files


def _columns(kind: type) -> list[str]:
    return [f.name for f in fields(kind)]


def write_table(out_dir: Path, stem: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Path]:
    """Write ``out_dir/stem.csv`` (header ``columns``, then ``rows``) and, when pyarrow can be imported,
    ``out_dir/stem.parquet`` with the same columns (integers as int64, or as strings past its range); returns
    the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    written = [path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    data = {}
    for position, column in enumerate(columns):
        values = [row[position] for row in rows]
        if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):
            values = [str(v) for v in values]
        data[column] = values
    table = pa.table(data) if rows else pa.table({c: pa.array([], pa.string()) for c in columns})
    parquet = out_dir / f"{stem}.parquet"
    pq.write_table(table, parquet)
    return [*written, parquet]


def write_records(record: RunRecord, out_dir: Path) -> list[Path]:
    """Write ``transactions.csv``, ``vouchers.csv`` and ``round_revenue.csv`` (columns: the fields of
    :class:`Transfer`, :class:`VoucherTotal`, :class:`RoundRevenue`), Parquet beside each where pyarrow is
    installed; returns the paths."""
    paths = []
    for stem, kind, rows in (("transactions", Transfer, record.transfers), ("vouchers", VoucherTotal, record.vouchers),
                             ("round_revenue", RoundRevenue, record.round_revenue)):  # fmt: skip
        columns = _columns(kind)
        paths += write_table(out_dir, stem, columns, [[getattr(row, c) for c in columns] for row in rows])
    return paths
