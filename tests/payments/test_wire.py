"""The wire models (marketplace.protocol.wire): what the server sends is what the SDK reads back, amounts are
ints in Python and decimal strings on the wire, and the client loads nothing of the server's payment package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from marketplace.protocol import wire

RECEIPT = {"channelId": 3, "assetId": 2, "price": "10000", "maxClaimableAmount": "30000", "highestVoucher": "30000",
           "debited": "20000", "calls": 2, "deposit": "50000", "depositLeft": "30000", "callsLeft": 3}  # fmt: skip
SETTLEMENT = {"scheme": "exact", "network": "eip155:31337", "transaction": "0xab", "payer": "0x1", "payTo": "0x2",
              "amount": "10000"}  # fmt: skip


def test_importing_the_client_loads_nothing_of_the_servers_payment_package():
    check = "import sys, marketplace.client; print([m for m in sys.modules if m.startswith('marketplace.payments')])"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("payment", [RECEIPT, SETTLEMENT], ids=["channel", "x402"])
def test_an_invoke_answer_reads_back_typed_and_dumps_byte_identical(payment):
    sent = json.dumps({"output": {"labels": [1]}, "payment": payment})
    answer = wire.InvokeResponse.model_validate(json.loads(sent))
    assert type(answer.payment) is (wire.ChannelReceipt if "channelId" in payment else wire.X402Settlement)
    assert json.dumps(answer.model_dump(mode="json", by_alias=True)) == sent  # the CLI's --json output
    if isinstance(answer.payment, wire.ChannelReceipt):
        assert (answer.payment.debited, answer.payment.deposit_left, answer.payment.calls_left) == (20_000, 30_000, 3)
    else:
        assert (answer.payment.amount, answer.payment.pay_to) == (10_000, "0x2")


@pytest.mark.parametrize(
    "amount", [-1, "-1", "1.5", 1.5, "", " 1", "1e6", "١٢", True, None, "9" * 79], ids=repr
)  # fmt: skip
def test_an_amount_is_a_decimal_string_of_base_units_and_nothing_else(amount):
    with pytest.raises(ValidationError, match="revenue_received"):
        wire.AssetRevenue.model_validate({"asset_id": 1, "uri": "u", "revenue_received": amount})


def test_an_amount_of_a_uint256_reads_exactly_and_writes_back_as_the_same_string():
    biggest = str(2**256 - 1)
    revenue = wire.AssetRevenue.model_validate({"asset_id": 1, "uri": "u", "revenue_received": biggest})
    assert revenue.revenue_received == 2**256 - 1
    assert revenue.model_dump(mode="json")["revenue_received"] == biggest
    assert wire.AssetRevenue(asset_id=1, uri="u", revenue_received=5).model_dump(mode="json")["revenue_received"] == "5"


def test_a_payment_that_is_neither_kind_names_what_the_closest_one_lacks():
    with pytest.raises(ValidationError, match=r"payment\n.*payTo: Field required"):
        wire.InvokeResponse.model_validate(
            {"output": 1, "payment": {k: v for k, v in SETTLEMENT.items() if k != "payTo"}}
        )
