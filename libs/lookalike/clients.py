"""Outgoing gRPC calls between services: every call gets a deadline (the default for its kind, cut
to what is left of the caller's own deadline) and carries the request id."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import grpc

from lookalike.config import Settings
from lookalike.logs import outgoing_traceparent, request_id_var
from lookalike.server import remaining_timeout
from lookalike.v1 import (
    encoder_service_pb2_grpc,
    ingest_service_pb2_grpc,
    rerank_service_pb2_grpc,
    search_service_pb2_grpc,
)

# Retry only what is safe to retry: a peer that is briefly unavailable (restart, rollout).
# round_robin: with a headless Service (one DNS record per pod) calls spread over every replica,
# instead of pinning each client to the first address it resolved.
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class _DeadlineInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        timeout = remaining_timeout(details.timeout or self.default_timeout)
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if (rid := request_id_var.get()) and "x-request-id" not in metadata:
            metadata.add("x-request-id", rid)
        if (traceparent := outgoing_traceparent()) and "traceparent" not in metadata:
            metadata.add("traceparent", traceparent)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(self._details(client_call_details), request)


def open_channel(address: str, settings: Settings, default_timeout: float | None = None) -> grpc.aio.Channel:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    return grpc.aio.insecure_channel(
        address,
        options=options,
        interceptors=[_DeadlineInterceptor(default_timeout or settings.rpc_timeout_s)],
    )


class ServiceClients:
    """Lazily opened stubs of the internal services, each on its own channel and default deadline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, stub_class: type, address: str, timeout: float) -> Any:
        channel = open_channel(address, self.settings, timeout)
        self._channels.append(channel)
        return stub_class(channel)

    @cached_property
    def encoder(self) -> encoder_service_pb2_grpc.EncoderServiceStub:
        return self._stub(encoder_service_pb2_grpc.EncoderServiceStub, self.settings.encoder_addr, self.settings.encode_timeout_s)

    @cached_property
    def search(self) -> search_service_pb2_grpc.SearchServiceStub:
        return self._stub(search_service_pb2_grpc.SearchServiceStub, self.settings.search_addr, self.settings.rpc_timeout_s)

    @cached_property
    def rerank(self) -> rerank_service_pb2_grpc.RerankServiceStub:
        return self._stub(rerank_service_pb2_grpc.RerankServiceStub, self.settings.rerank_addr, self.settings.rerank_timeout_s)

    @cached_property
    def ingest(self) -> ingest_service_pb2_grpc.IngestServiceStub:
        return self._stub(ingest_service_pb2_grpc.IngestServiceStub, self.settings.ingest_addr, self.settings.encode_timeout_s)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
