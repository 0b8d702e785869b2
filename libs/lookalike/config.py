"""Typed settings for every lookalike process, read from LOOKALIKE_* environment variables.

One class for the whole mesh keeps names consistent between the services that listen on an address
and the ones that call it; each service reads only what it needs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", extra="ignore")

    # logging
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # where each service listens and is called (host:port)
    gateway_addr: str = "127.0.0.1:50051"
    ingest_addr: str = "127.0.0.1:50052"
    encoder_addr: str = "127.0.0.1:50053"
    search_addr: str = "127.0.0.1:50054"
    rerank_addr: str = "127.0.0.1:50055"
    # Overrides the address a server binds (e.g. 0.0.0.0:50051 in a container); defaults to its *_addr.
    listen_addr: str | None = None
    # Prometheus /metrics on this port (0: off).
    metrics_port: int = 0
    # Seconds in-flight RPCs get to finish after SIGTERM.
    shutdown_grace_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024

    # deadlines of outgoing calls, seconds
    rpc_timeout_s: float = 10.0
    encode_timeout_s: float = 60.0
    rerank_timeout_s: float = 20.0

    # infrastructure
    nats_url: str = "nats://127.0.0.1:4222"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "lookalike"
    s3_secret_key: str = "lookalike-secret"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_bucket: str = "lookalike"
    # Endpoint written into preview URLs when clients reach the store by another address.
    s3_public_endpoint: str | None = None
    presign_expiry_s: int = 3600
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""

    # images
    max_image_bytes: int = 32 * 1024 * 1024
    # Decompression-bomb guard: refused from the header, before any pixel is decoded.
    max_image_pixels: int = 64_000_000

    # query by URL
    url_fetch_timeout_s: float = 10.0
    # Lets the gateway fetch from private/loopback addresses (tests, single-machine demos only).
    url_fetch_allow_private: bool = False

    # encoder
    encoder_backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    model_repository: Path = Field(default=REPO_ROOT / "models")
    triton_url: str = "127.0.0.1:8001"
    encoder_threads: int = 0  # 0: one per core

    # rerank: keypoints of this many catalog images stay in memory (~50 KB each)
    rerank_cache_images: int = 2000

    # ingest
    ingest_stream: str = "LOOKALIKE_INGEST"
    ingest_consumer: str = "ingest-workers"
    # worker loops inside the ingest service process (more can run as `python -m services.ingest.worker`)
    ingest_workers: int = 1
    ingest_batch_size: int = 16
    ingest_ack_wait_s: float = 300.0
    ingest_max_deliver: int = 5
    # JetStream de-duplication window for re-uploads of the same image to the same collection.
    ingest_dedup_window_s: float = 3600.0
    resource_bucket: str = "lookalike_resources"
    job_bucket: str = "lookalike_jobs"

    # gateway security
    # Require `authorization: Bearer <key>` on every public call (keys per namespace, stored hashed).
    auth_enabled: bool = False
    # The operator's key: may create namespaces and API keys. Give it through a Secret.
    admin_api_key: str = ""
    # Serve TLS with this certificate chain and key (PEM files); plaintext when unset.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def listen_address(self, own_addr: str) -> str:
        return self.listen_addr or own_addr


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
