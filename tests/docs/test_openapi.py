"""A client generated from the server's /openapi.json can sign in and upload (issue 13 §6 "OpenAPI").

The generator is a real one from PyPI, ``openapi-python-client`` (the dev extra pins it), run as a user
would run it on the document a live server serves; the test then imports the generated package and,
with nothing but it (and a key to sign the login message), signs in, uploads an asset's content,
reads the asset back and meets a paid route's 402. Before: operation ids were FastAPI's
``upload_v1_assets__asset_id__content_put``, the upload had no request body in the document (a
generated client could not send one) and no security scheme was declared.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from tests.helpers.servers import serving

CONTENT = b"generated clients upload too\n" * 100
PACKAGE = "agentmarket_generated"

#: The operation ids a generated client's functions are named after: stable, so they are spelled out here.
OPERATIONS = {
    ("get", "/healthz"): "getHealth",
    ("get", "/v1/deployment"): "getDeployment",
    ("post", "/v1/auth/nonce"): "requestLoginNonce",
    ("post", "/v1/auth/verify"): "verifyLogin",
    ("get", "/v1/assets"): "listAssets",
    ("get", "/v1/assets/{asset_id}"): "getAsset",
    ("put", "/v1/assets/{asset_id}/content"): "uploadContent",
    ("get", "/v1/assets/{asset_id}/content"): "downloadContent",
    ("get", "/v1/assets/{asset_id}/x402"): "downloadContentX402",
    ("get", "/v1/agents/{agent_id}"): "getAgent",
    ("get", "/v1/accounts/{address}/earnings"): "getEarnings",
    ("get", "/v1/stats"): "getStats",
    ("post", "/v1/models/{asset_id}/invoke"): "invokeModel",
    ("get", "/v1/payments"): "getPaymentTerms",
}


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    """/openapi.json of a server (it does not depend on the chain: the embedded one is never started)."""
    home = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(data_dir=home / "server", manifest=home / "none.json")).openapi()


@pytest.fixture(scope="module")
def generated(document, tmp_path_factory) -> ModuleType:
    """The package ``openapi-python-client`` generates from ``document``, imported."""
    home = tmp_path_factory.mktemp("generated")
    (home / "openapi.json").write_text(json.dumps(document))
    config = {"project_name_override": "agentmarket-generated", "package_name_override": PACKAGE, "post_hooks": []}
    (home / "config.json").write_text(json.dumps(config))
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--config", "config.json", "--meta", "none",
         "--output-path", PACKAGE],
        cwd=home, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr  # every operation generated
    sys.path.insert(0, str(home))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(home))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_operations_are_named_and_the_bearer_scheme_is_declared(document):
    operations = {(method, path): op for path, ops in document["paths"].items() for method, op in ops.items()}
    assert {key: op["operationId"] for key, op in operations.items() if key in OPERATIONS} == OPERATIONS
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids)) and all(i[:1].islower() and "_" not in i for i in ids), ids

    assert document["components"]["securitySchemes"]["bearerAuth"] | {"description": ""} == {
        "type": "http", "scheme": "bearer", "bearerFormat": "agentmarket token", "description": "",
    }  # fmt: skip
    secured = {key for key, op in operations.items() if op.get("security") == [{"bearerAuth": []}]}
    assert secured == {("put", "/v1/assets/{asset_id}/content"), ("get", "/v1/assets/{asset_id}/content")}
    assert all(
        "authorization" not in {p["name"].lower() for p in op.get("parameters", [])} for op in operations.values()
    )

    upload = operations[("put", "/v1/assets/{asset_id}/content")]
    assert upload["requestBody"]["required"] is True
    assert upload["requestBody"]["content"] == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    invoke = operations[("post", "/v1/models/{asset_id}/invoke")]
    assert {p["name"] for p in invoke["parameters"] if p["in"] == "header"} == {
        "PAYMENT-SIGNATURE",
        "X-Payment-Channel",
    }
    assert "PAYMENT-REQUIRED" in invoke["responses"]["402"]["headers"]
    assert "PAYMENT-RESPONSE" in invoke["responses"]["200"]["headers"]
    x402 = operations[("get", "/v1/assets/{asset_id}/x402")]
    assert "payment-signature" in {p["name"].lower() for p in x402["parameters"] if p["in"] == "header"}
    assert "PAYMENT-REQUIRED" in x402["responses"]["402"]["headers"]
    schemas = document["components"]["schemas"]
    for op in operations.values():  # every error a route declares is documented as JSON {error, detail, ...}
        for status, response in op["responses"].items():
            if status[0] in "45":
                name = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert {"error", "detail"} <= set(schemas[name]["required"]), (op["operationId"], status, name)


def test_a_generated_client_signs_in_and_uploads(generated, document, chain, deployment, market, bob, tmp_path):
    asset_id = market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=hashlib.sha256(CONTENT).digest(), uri="ipfs://generated",
        price=to_units(1), token=market.token.address, payees=[(bob.address, 10_000)], listed=False,
    )  # fmt: skip
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=chain)) as url:
        assert httpx.get(f"{url}/openapi.json", timeout=30).json() == document  # what was generated from

        client_module = importlib.import_module(f"{PACKAGE}.client")
        api = f"{PACKAGE}.api"
        models = importlib.import_module(f"{PACKAGE}.models")
        types = importlib.import_module(f"{PACKAGE}.types")
        nonce = importlib.import_module(f"{api}.auth.request_login_nonce")
        verify = importlib.import_module(f"{api}.auth.verify_login")
        upload = importlib.import_module(f"{api}.content.upload_content")
        get_asset = importlib.import_module(f"{api}.assets.get_asset")
        invoke = importlib.import_module(f"{api}.models.invoke_model")

        anonymous = client_module.Client(base_url=url)
        issued = nonce.sync(client=anonymous, body=models.NonceRequest(address=bob.address))
        assert isinstance(issued, models.NonceResponse)
        signature = Account.sign_message(encode_defunct(text=issued.message), bob.key).signature
        token = verify.sync(client=anonymous, body=models.VerifyRequest(message=issued.message,
                                                                         signature="0x" + signature.hex()))  # fmt: skip
        assert isinstance(token, models.TokenResponse) and token.address == bob.address

        signed_in = client_module.AuthenticatedClient(base_url=url, token=token.token)
        stored = upload.sync_detailed(asset_id, client=signed_in, body=types.File(payload=io.BytesIO(CONTENT)))
        assert stored.status_code == 201, stored.content
        assert isinstance(stored.parsed, models.Uploaded)
        assert (stored.parsed.asset_id, stored.parsed.version, stored.parsed.size) == (asset_id, 1, len(CONTENT))
        assert stored.parsed.sha256 == "0x" + hashlib.sha256(CONTENT).hexdigest()

        refused = upload.sync_detailed(asset_id, client=anonymous, body=types.File(payload=io.BytesIO(b"x")))
        assert refused.status_code == 401 and isinstance(refused.parsed, models.ErrorBody)
        assert refused.parsed.error == "unauthorized"
        wrong = upload.sync_detailed(asset_id, client=signed_in, body=types.File(payload=io.BytesIO(b"not it")))
        assert wrong.status_code == 422 and wrong.parsed.error == "content_hash_mismatch"

        detail = get_asset.sync(asset_id, client=anonymous)
        assert isinstance(detail, models.AssetDetail) and detail.content_uploaded is True

        unpaid = invoke.sync_detailed(asset_id, client=anonymous, body=models.InvokeRequest(input_=[1]))
        assert unpaid.status_code == 404 and unpaid.parsed.error == "model_not_served"
