"""The server's database: every bad ``AGENTMARKET_DATABASE_URL`` is one line naming what to do, and
``agentmarket serve`` runs on a real PostgreSQL server given a plain ``postgresql://`` URL."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from marketplace.errors import AgentmarketError
from marketplace.indexer.database import open_database
from tests.helpers.cli import AGENTMARKET, assert_one_line_error, free_port, run_cli, wait_for_json
from tests.helpers.postgres import PostgresServer


def test_a_sqlite_url_opens(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        assert engine.dialect.name == "sqlite" and (tmp_path / "index.sqlite3").exists()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("index.sqlite3", ["is not a SQLAlchemy URL", "postgresql://user@host:5432/dbname"]),
        ("mongodb://db.example/x", ["unknown database kind 'mongodb'", "postgresql://"]),
        ("postgresql+psycopg2://u@127.0.0.1/x", ["needs the driver 'psycopg2'", "pip install 'agentmarket[postgres]'"]),
        ("sqlite:////nonexistent-dir/x/index.sqlite3", ["cannot open the database at sqlite:////nonexistent-dir"]),
    ],
)
def test_a_bad_database_url_is_one_clear_sentence(url, fragments):
    with pytest.raises(AgentmarketError) as info:
        open_database(url)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_an_unreachable_postgresql_server_is_named_without_its_password():
    port = free_port()  # nothing listens there
    with pytest.raises(AgentmarketError) as info:
        open_database(f"postgres://reader:s3cret@127.0.0.1:{port}/market")
    message = str(info.value)
    assert f"cannot open the database at postgresql+psycopg://reader:***@127.0.0.1:{port}/market" in message
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.backend("anvil")
def test_serve_says_in_one_line_which_database_it_cannot_open(anvil_manifest, tmp_path):
    rpc, manifest = anvil_manifest
    port = free_port()
    result = run_cli(
        "serve", "--rpc", rpc, "--manifest", str(manifest), "--data-dir", str(tmp_path), "--port", str(free_port()),
        env={"AGENTMARKET_DATABASE_URL": f"postgresql://reader:s3cret@127.0.0.1:{port}/market"},
    )  # fmt: skip
    assert_one_line_error(result, f"cannot open the database at postgresql+psycopg://reader:***@127.0.0.1:{port}")
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.backend("anvil")
@pytest.mark.postgres
def test_serve_on_postgresql_finds_and_shows_assets(anvil_manifest, postgres_server: PostgresServer, tmp_path):
    """The two reads that failed on PostgreSQL (an asset's detail, a search in another case), served by the CLI."""
    rpc, manifest = anvil_manifest
    url = postgres_server.fresh_database("serve_cli").replace("postgresql+psycopg://", "postgresql://", 1)
    port = free_port()
    server = subprocess.Popen(
        [*AGENTMARKET, "serve", "--rpc", rpc, "--manifest", str(manifest), "--port", str(port),
         "--data-dir", str(tmp_path / "server")],
        env={**os.environ, "AGENTMARKET_DATABASE_URL": url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for_json(f"http://127.0.0.1:{port}/healthz", server)["indexer_lag"] == 0
        found = httpx.get(f"http://127.0.0.1:{port}/v1/assets", params={"q": "IRIS"}, timeout=10).json()
        assert [a["uri"] for a in found["items"]] == ["ipfs://Iris-Setosa"]
        detail = httpx.get(f"http://127.0.0.1:{port}/v1/assets/1", timeout=10)
        assert detail.status_code == 200, detail.text
        assert detail.json()["rating"] == {"count": 0, "average": None}
        assert not (tmp_path / "server" / "index.sqlite3").exists()  # the read model is on PostgreSQL
    finally:
        server.terminate()
        server.wait(timeout=15)
