"""Fixtures shared by the whole suite.

Chain tests are written once and run against every backend: the ``chain`` fixture is parametrized
over the embedded py-evm chain and a real anvil node (started once per session, stopped at the
end, also when tests fail). Each test runs inside a snapshot that is reverted afterwards. A test
marked ``@pytest.mark.backend("embedded")`` (or ``"anvil"``) runs on that backend only: for a test
using ``chain`` the parametrization below has that one backend; a test without it starts that
backend itself. Shared helpers (no fixtures) are in ``tests/helpers``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from marketplace.chain import Chain, connect
from marketplace.chain.contracts import TestUSD
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from tests.helpers.chain import BACKENDS, anvil_market
from tests.helpers.postgres import Databases, PostgresServer
from tests.helpers.postgres import Unavailable as PostgresUnavailable
from tests.helpers.postgres import start_server as start_postgres


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``session_chain`` (so ``chain``, ``market``, …) over every backend, or over the one a
    ``backend`` marker names (the closest: a test's own, else its class's or module's)."""
    if "session_chain" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backend")
    backends = list(BACKENDS)
    if marker is not None:
        if marker.args not in [(name,) for name in BACKENDS]:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: @pytest.mark.backend{marker.args} names no "
                                    f"backend; use one of {', '.join(BACKENDS)}")  # fmt: skip
        backends = list(marker.args)
    metafunc.parametrize("session_chain", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def session_chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """One chain per backend for the whole session."""
    chain = connect(request.param)
    try:
        yield chain
    finally:
        chain.close()


@pytest.fixture(scope="session")
def deployment(session_chain: Chain) -> Deployment:
    """The contract set, deployed once per backend by dev account 0."""
    return deploy_all(session_chain, session_chain.accounts[0])


@pytest.fixture
def chain(session_chain: Chain, deployment: Deployment) -> Iterator[Chain]:
    """The session chain, with every change a test makes reverted when it ends."""
    snapshot = session_chain.snapshot()
    try:
        yield session_chain
    finally:
        session_chain.revert(snapshot)


@pytest.fixture
def token(chain: Chain, deployment: Deployment) -> TestUSD:
    """TestUSD, with 1,000 tUSD minted to ``alice``."""
    tusd = deployment.token(chain)
    tusd.mint(chain.accounts[0], chain.accounts[1].address, to_units(1000))
    return tusd


@pytest.fixture
def admin(chain: Chain) -> LocalAccount:
    """Deployer: token admin and faucet minter."""
    return chain.accounts[0]


@pytest.fixture
def alice(chain: Chain) -> LocalAccount:
    """A funded payer (holds tUSD after the ``token`` fixture)."""
    return chain.accounts[1]


@pytest.fixture
def bob(chain: Chain) -> LocalAccount:
    """A payee."""
    return chain.accounts[2]


@pytest.fixture
def relayer(chain: Chain) -> LocalAccount:
    """Submits other people's signed authorizations and pays the gas."""
    return chain.accounts[3]


@pytest.fixture
def carol(chain: Chain) -> LocalAccount:
    """A second buyer (holds no tUSD until a test mints some)."""
    return chain.accounts[4]


@pytest.fixture
def session_key(chain: Chain) -> LocalAccount:
    """A key that signs vouchers for someone else's channel."""
    return chain.accounts[5]


@pytest.fixture
def market(chain: Chain, deployment: Deployment, token: TestUSD) -> Market:
    """Every marketplace contract, bound to the snapshot-reverted chain (alice holds 1,000 tUSD)."""
    return deployment.market(chain)


#: Read-model engines the API tests run on: SQLite (the default) and a real PostgreSQL server.
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (per xdist worker), started on first use; skips if none can be had."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=DATABASES)
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Databases:
    """Fresh read-model databases of one engine for this test module: ``databases.url(label)`` is empty each time."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    return Databases(request.param, prefix=module, directory=tmp_path_factory.mktemp(f"db-{module}"), server=server)


@pytest.fixture(scope="module")
def anvil_manifest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An anvil node with the contracts and one listed asset; its RPC URL and manifest."""
    with anvil_market() as (chain, deployment, market):
        alice = chain.accounts[1]
        market.marketplace.publish(alice, kind=AssetKind.DATASET, content_hash=hashlib.sha256(b"iris").digest(),
                                   uri="ipfs://Iris-Setosa", price=1_000_000, token=market.token.address,
                                   payees=[(alice.address, 10_000)])  # fmt: skip
        yield chain.rpc_url, deployment.save(tmp_path_factory.mktemp("anvil") / "deployment.json")
