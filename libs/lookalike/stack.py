"""The whole mesh on one machine: the three real servers (lookalike.devservers) plus the five
services, an extra ingest worker and the web page (services.web, HTTP), each as its own process on
127.0.0.1.

    python -m lookalike.stack up --dir .run       # returns once every service reports SERVING
    python -m lookalike.stack status --dir .run
    python -m lookalike.stack down --dir .run

Used by `make up`, the demo and the end-to-end tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike import devservers
from lookalike.devservers import Infra, ServerProcess, free_port

log = logging.getLogger(__name__)

# start order: what others call first
SERVICES = ("encoder", "search", "rerank", "ingest", "gateway", "web")
# services that answer HTTP (GET /healthz) instead of grpc.health.v1
HTTP_SERVICES = ("web",)
DEFAULT_GATEWAY_PORT = 50051
# with a fixed gateway port (`make up`, the demo) the page is on this port when it is free
DEFAULT_WEB_PORT = 8080
STATE_FILE = "stack-state.json"
SERVICE_START_TIMEOUT = 120.0


def health_check(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def http_health_check(address: str, timeout: float = 1.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own address: never via a proxy
    try:
        with opener.open(f"http://{address}/healthz", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def is_serving(name: str, address: str) -> bool:
    return http_health_check(address) if name in HTTP_SERVICES else health_check(address)


def _require_serving(name: str, address: str) -> None:
    if not is_serving(name, address):
        raise RuntimeError(f"{address} not serving yet")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Stack:
    infra: Infra
    run_dir: Path
    addresses: dict[str, str]
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServerProcess] = field(default_factory=dict)
    # whether stop() also stops the servers (False when they belong to someone else, e.g. a test session)
    own_infra: bool = True
    # Prometheus /metrics port of each service process
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def gateway_addr(self) -> str:
        return self.addresses["gateway"]

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.infra.env(), **self.extra_env}
        for name, address in self.addresses.items():
            if name in SERVICES:
                env[f"LOOKALIKE_{name.upper()}_ADDR"] = address
        env.setdefault("LOOKALIKE_LOG_FORMAT", "json")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_service(
        self, name: str, module: str | None = None, address: str | None = None, env: dict[str, str] | None = None,
        health: Callable[[], None] | None = None,
    ) -> ServerProcess:
        """Starts `python -m services.<name>` and waits until its health check says SERVING."""
        module = module or f"services.{name}"
        address = address or self.addresses[name]
        env = {**self.env(), **(env or {})}
        env["LOOKALIKE_LISTEN_ADDR"] = address
        self.metrics_ports[name] = free_port()
        env.setdefault("LOOKALIKE_METRICS_PORT", str(self.metrics_ports[name]))
        process = devservers.launch_process(
            name,
            [sys.executable, "-m", module],
            data_dir=self.run_dir,
            log_path=self.run_dir / "logs" / f"{name}.log",
            ports={"client": int(address.rsplit(":", 1)[1])},
            health=health or (lambda: _require_serving(name, address)),
            timeout=SERVICE_START_TIMEOUT,
            env=env,
        )
        self.services[name] = process
        return process

    def stop_service(self, name: str, timeout: float = 20) -> None:
        if process := self.services.pop(name, None):
            process.stop(timeout)

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            try:
                self.stop_service(name)
            except Exception:
                log.exception("stopping %s failed", name)
        if self.own_infra:
            self.infra.stop()

    def save(self) -> None:
        if self.own_infra:
            devservers.save_state(self.infra, self.run_dir / "infra-state.json")
        state = {
            "addresses": self.addresses,
            "extra_env": self.extra_env,
            "services": {n: p.to_json() for n, p in self.services.items()},
            "metrics_ports": self.metrics_ports,
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def start_stack(
    run_dir: Path,
    gateway_port: int | None = DEFAULT_GATEWAY_PORT,
    extra_env: dict[str, str] | None = None,
    extra_workers: int = 1,
    infra: Infra | None = None,
) -> Stack:
    """Starts the servers (unless infra is given) and the services; on failure stops what it started."""
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    own_infra = infra is None
    infra = infra or devservers.start_infra(run_dir / "data")
    addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
    if gateway_port:
        addresses["gateway"] = f"127.0.0.1:{gateway_port}"
        if _port_is_free(DEFAULT_WEB_PORT):
            addresses["web"] = f"127.0.0.1:{DEFAULT_WEB_PORT}"
    stack = Stack(infra, run_dir, addresses, dict(extra_env or {}), own_infra=own_infra)
    try:
        for name in SERVICES:
            stack.start_service(name)
        for i in range(extra_workers):
            worker = f"ingest-worker-{i}"
            stack.addresses[worker] = f"127.0.0.1:{free_port()}"
            stack.start_service(worker, module="services.ingest.worker", address=stack.addresses[worker])
    except BaseException:
        stack.stop()
        raise
    stack.save()
    return stack


def read_gateway_address(run_dir: Path) -> str | None:
    """The gateway of a stack an earlier `up` left running in run_dir, if it is serving."""
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        return None
    address = json.loads(state_path.read_text())["addresses"]["gateway"]
    return address if health_check(address) else None


def stop_from_state(run_dir: Path) -> bool:
    """Stops what an earlier `up` started (services first, then servers)."""
    state_path = run_dir / STATE_FILE
    stopped = False
    if state_path.exists():
        state = json.loads(state_path.read_text())
        for name, data in reversed(list(state["services"].items())):
            ServerProcess.from_json(data).stop()
            log.info("stopped %s", name)
        state_path.unlink()
        stopped = True
    infra_state = run_dir / "infra-state.json"
    if infra_state.exists():
        devservers.stop_from_state(infra_state)
        stopped = True
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=Path(".run"))
    parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_dir = args.dir.resolve()
    if args.command == "up":
        if read_gateway_address(run_dir):
            print(f"a stack is already running from {run_dir}; run `make down` first", file=sys.stderr)
            return 1
        stop_from_state(run_dir)  # leftovers of a stack that died
        started = time.monotonic()
        stack = start_stack(run_dir, args.gateway_port)
        print(f"lookalike is up in {time.monotonic() - started:.0f}s: gateway {stack.gateway_addr}, "
              f"web page http://{stack.addresses['web']}/; logs in {run_dir / 'logs'}")
        return 0
    if args.command == "down":
        print("stopped" if stop_from_state(run_dir) else "nothing to stop")
        return 0
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        print("not running")
        return 1
    state = json.loads(state_path.read_text())
    ok = True
    metrics = state.get("metrics_ports", {})
    for name, address in state["addresses"].items():
        serving = is_serving(name, address)
        ok &= serving
        scrape = f"http://127.0.0.1:{metrics[name]}/metrics" if name in metrics else ""
        print(f"{name:18} {address:22} {'SERVING' if serving else 'DOWN':8} {scrape}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
