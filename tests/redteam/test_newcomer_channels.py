"""Careless newcomer, following the README's buyer steps against `agentmarket node` + `agentmarket serve`.

`agentmarket channel open ID --deposit P` locks the deposit for 24 hours (the CLI's default `--hours`)
plus the 15-minute claim window, and nobody can give it back earlier: the payer cannot close a channel.
The CLI opens one for anything: a *dataset* (a mistyped id — datasets are never invoked, so the money is
simply locked for a day), or a model the server it names does not serve (the README's own order: `serve`
without `--model`, then `channel open 2`, then `invoke 2 --channel 1` → `error: this server does not serve
model 2`, with the 5 tUSD already locked for a day and no hint of what to do). Expected: `channel open`
refuses, in one line and before any transaction, an asset that is not a model or that the server does not
serve (`invoke` can say what to do: the provider must run `serve --model ID=…`).
"""

from __future__ import annotations

import pytest

from tests.helpers.stack import cli, node_and_server, ok

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`agentmarket node` and `agentmarket serve` exactly as the README starts them (no --model)."""
    with node_and_server(tmp_path_factory.mktemp("newcomer"), password="pw", settle_interval=None) as running:
        yield running.home, running.env


@pytest.fixture(scope="module")
def readme_assets(stack):
    """The README's provider steps: iris.csv (asset 1, a dataset) and knn.pkl (asset 2, a model)."""
    home, _ = stack
    ok(cli(stack, "wallet", "new", wallet="provider.json"))
    ok(cli(stack, "faucet", "--amount", "10", wallet="provider.json"))
    (home / "iris.csv").write_text("sepal,label\n5.1,0\n")
    (home / "knn.pkl").write_bytes(b"not really a pickle")
    assert "published asset 1" in ok(cli(stack, "asset", "publish", str(home / "iris.csv"), "--price", "2.5",
                                         wallet="provider.json"))  # fmt: skip
    assert "published asset 2" in ok(cli(stack, "asset", "publish", str(home / "knn.pkl"), "--price", "4",
                                         "--kind", "1", wallet="provider.json"))  # fmt: skip
    ok(cli(stack, "wallet", "new", wallet="agent.json"))
    ok(cli(stack, "faucet", "--amount", "20", wallet="agent.json"))
    return 1, 2


def _tusd(stack, wallet: str) -> str:
    import json

    return json.loads(ok(cli(stack, "wallet", "show", "--json", wallet=wallet)))["tusd"]


def test_channel_open_refuses_a_dataset(stack, readme_assets):
    dataset, _model = readme_assets
    before = _tusd(stack, "agent.json")
    result = cli(stack, "channel", "open", str(dataset), "--deposit", "5", wallet="agent.json")
    after = _tusd(stack, "agent.json")
    assert result.returncode != 0 and after == before, (
        f"`channel open {dataset}` (a dataset: never invoked) locked 5 tUSD for 24 h: {result.stdout.strip()!r}"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"asset {dataset} is a dataset" in result.stderr and f"agentmarket buy {dataset}" in result.stderr


def test_channel_open_refuses_a_model_this_server_does_not_serve(stack, readme_assets):
    _dataset, model = readme_assets
    before = _tusd(stack, "agent.json")
    result = cli(stack, "channel", "open", str(model), "--deposit", "5", wallet="agent.json")
    after = _tusd(stack, "agent.json")
    opened = result.stdout.split()[2] if result.stdout.startswith("opened channel") else "1"
    invoked = cli(stack, "invoke", str(model), "--channel", opened, "--input", "[5.1, 3.5, 1.4, 0.2]",
                  wallet="agent.json")  # fmt: skip
    assert result.returncode != 0 and after == before, (
        f"`channel open {model}` locked 5 tUSD for 24 h on a server that does not serve model {model}; "
        f"then `invoke` says: {invoked.stderr.strip()!r}"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"does not serve model {model}" in result.stderr and f"--model {model}=" in result.stderr
    assert "nothing was locked" in result.stderr
