"""Start the encoder service as its own process on free ports (tests and bench/encoder.py).

    proc = start_encoder(run_dir, env={"LOOKALIKE_ENCODER_BACKEND": "triton", ...})
    ... grpc to proc.address, Prometheus text from proc.metrics() ...
    proc.stop()
"""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lookalike import devservers
from lookalike.devservers import ServerProcess, free_port
from lookalike.stack import health_check

__all__ = ["EncoderProcess", "parse_metrics", "start_encoder"]

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class EncoderProcess:
    process: ServerProcess
    address: str
    metrics_port: int

    def metrics_text(self) -> str:
        with _direct.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample: (name, sorted labels) -> value."""
        return parse_metrics(self.metrics_text())

    def stop(self, timeout: float = 20) -> None:
        self.process.stop(timeout)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def start_encoder(run_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 120.0) -> EncoderProcess:
    """``python -m services.encoder`` on a free port with Prometheus metrics on another; returns once
    it reports SERVING (its models are loaded by then). ``env`` adds LOOKALIKE_* settings."""
    run_dir = Path(run_dir).absolute()
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    full_env = {**os.environ, "LOOKALIKE_LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.update({"LOOKALIKE_ENCODER_ADDR": address, "LOOKALIKE_LISTEN_ADDR": address,
                     "LOOKALIKE_METRICS_PORT": str(metrics_port)})

    def health() -> None:
        if not health_check(address):
            raise RuntimeError(f"{address} not serving yet")

    process = devservers.launch_process(
        "encoder", [sys.executable, "-m", "services.encoder"], data_dir=run_dir,
        log_path=run_dir / "encoder.log", ports={"client": port, "metrics": metrics_port},
        health=health, timeout=timeout, env=full_env,
    )
    return EncoderProcess(process, address, metrics_port)
