"""moto's server on 127.0.0.1 for tests that need AWS (boto3 reaches it through AWS_ENDPOINT_URL)."""

from __future__ import annotations

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="session")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Environment pointing boto3 at moto, with a clean moto state; returns (ssm, secretsmanager)."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": "us-west-2",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    return boto3.client("ssm"), boto3.client("secretsmanager")
