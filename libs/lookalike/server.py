"""gRPC server bootstrap shared by every service: health checking, reflection, structured logs,
Prometheus metrics, request ids, deadline propagation, error-to-status mapping and graceful shutdown.

A service supplies its servicers and start/stop hooks; everything else is here, once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from lookalike.config import Settings
from lookalike.errors import LookalikeError
from lookalike.logs import configure_logging, continue_trace, request_id_var, trace_var

log = logging.getLogger(__name__)

# Absolute monotonic deadline of the RPC being served; outgoing calls never outlive it.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

RPC_TOTAL = Counter("lookalike_rpc_total", "RPCs served", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "lookalike_rpc_seconds",
    "RPC latency",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _status_of_exception(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """Statuses for known exceptions; None means an unexpected (internal) error."""
    if isinstance(exc, LookalikeError):
        return exc.code, exc.message
    if isinstance(exc, grpc.aio.AioRpcError):
        # a downstream call failed: keep its code so clients see NOT_FOUND/INVALID_ARGUMENT/...
        return exc.code(), exc.details() or exc.code().name
    from lookalike.imaging import ImageError

    # corrupt, truncated, unsupported and decompression-bomb images alike: the argument is bad
    if isinstance(exc, ImageError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return None


def rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wraps a servicer method: request id and deadline context, metrics, and error → status."""
    method_name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        rid_token = request_id_var.set(str(metadata.get("x-request-id") or uuid.uuid4().hex[:16]))
        trace_token = trace_var.set(continue_trace(str(metadata.get("traceparent") or "")))
        remaining = context.time_remaining()
        deadline_token = deadline_var.set(time.monotonic() + remaining if remaining is not None else None)
        service = type(self).__name__.removesuffix("Servicer")
        code = grpc.StatusCode.OK
        started = time.perf_counter()
        try:
            # services that guard their API (the gateway) check the caller before the handler runs
            if (authorize := getattr(self, "authorize", None)) is not None:
                await authorize(method_name, request, context)
            return await method(self, request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:  # the handler aborted with its own status
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            status = _status_of_exception(exc)
            if status is None:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method_name)
                await context.abort(code, f"internal error (request id {request_id_var.get()})")
            code, message = status
            log.info("%s failed: %s %s", method_name, code.name, message)
            await context.abort(code, message)
        finally:
            RPC_TOTAL.labels(service, method_name, code.name).inc()
            RPC_SECONDS.labels(service, method_name).observe(time.perf_counter() - started)
            deadline_var.reset(deadline_token)
            trace_var.reset(trace_token)
            request_id_var.reset(rid_token)

    return wrapper


def remaining_timeout(default: float) -> float:
    """The timeout for an outgoing call: the default, cut to what is left of the caller's deadline."""
    deadline = deadline_var.get()
    if deadline is None:
        return default
    return max(0.001, min(default, deadline - time.monotonic()))


@dataclass
class ServiceSpec:
    """What a service contributes to the common server."""

    name: str
    # host:port the service is known by; bound unless settings.listen_addr overrides it
    address: str
    # (add_XServicer_to_server, servicer, full service name) triples
    servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]]
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # background tasks that run while the server serves (e.g. consumers); cancelled at shutdown
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def serve(spec: ServiceSpec, settings: Settings, stop_event: asyncio.Event | None = None) -> None:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for add, servicer, full_name in spec.servicers:
        add(servicer, server)
        names.append(full_name)
    reflection.enable_server_reflection(names, server)

    bind = settings.listen_address(spec.address)
    if settings.tls_cert_file and settings.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        port = server.add_secure_port(bind, credentials)
    else:
        port = server.add_insecure_port(bind)
    if port == 0:
        raise RuntimeError(f"{spec.name}: cannot bind {bind}")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=bind.rsplit(":", 1)[0] or "0.0.0.0")

    for hook in spec.on_start:
        await hook()
    await server.start()
    background = [asyncio.create_task(job(), name=f"{spec.name}-background") for job in spec.background]
    for full_name in [*names[2:], ""]:
        await health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s", spec.name, bind, extra={"services": names[2:]})

    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass

    # a background job that dies takes the process down instead of leaving a half-working service
    waiters = [asyncio.create_task(stop.wait()), *background]
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not waiters[0] and not t.cancelled() and t.exception()]
    for task in failed:
        log.error("background task failed", exc_info=task.exception())

    log.info("%s shutting down: draining for up to %.0fs", spec.name, settings.shutdown_grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    for hook in spec.on_stop:
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    waiters[0].cancel()
    log.info("%s stopped", spec.name)
    if failed:
        raise SystemExit(1)


def run_service(name: str, build: Callable[[Settings], ServiceSpec], settings: Settings | None = None) -> None:
    """Entry point of a service process: logging, then serve until SIGTERM."""
    from lookalike.config import get_settings

    settings = settings or get_settings()
    configure_logging(name, settings.log_level, settings.log_format)

    async def main() -> None:
        await serve(build(settings), settings)

    asyncio.run(main())
