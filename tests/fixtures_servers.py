"""Session fixtures: the real NATS JetStream, S3 (SeaweedFS) and Milvus servers as local processes.

Tests that use them are marked ``@pytest.mark.integration``. A server that cannot start fails the
tests that need it (with the end of its log); it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lookalike.devservers import Infra, S3Settings, ServerStartError, start_infra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """NATS, the S3 server and Milvus on free ports under a session tmp dir; stopped at the end."""
    base = tmp_path_factory.mktemp("infra")
    try:
        servers = start_infra(base)
    except ServerStartError as exc:
        pytest.fail(f"could not start the real servers under {base}:\n{exc}", pytrace=False)
    try:
        yield servers
    finally:
        servers.stop()
    leftovers = servers.leftovers()
    assert not leftovers, f"processes left running after stop: {leftovers}"


@pytest.fixture(scope="session")
def nats_url(infra: Infra) -> str:
    """``nats://127.0.0.1:PORT``"""
    return infra.nats_url


@pytest.fixture(scope="session")
def s3_settings(infra: Infra) -> S3Settings:
    """Endpoint (``127.0.0.1:PORT``), keys and ``secure=False``; ``.client()`` gives a ``minio.Minio``."""
    return infra.s3


@pytest.fixture(scope="session")
def milvus_uri(infra: Infra) -> str:
    """``http://127.0.0.1:PORT`` for ``pymilvus.MilvusClient(uri=...)``"""
    return infra.milvus_uri
