"""The process supervisor for the real servers, and real round trips against each server."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from lookalike import devservers
from lookalike.devservers import (
    Infra,
    S3Settings,
    ServerProcess,
    ServerStartError,
    _group_members,
    launch_process,
    _proc_info,
    _render_template,
    _yaml_set,
    free_port,
    load_state,
    save_state,
    start_nats,
    start_object_store,
    stop_from_state,
)

ENV_NAMES = {
    "LOOKALIKE_NATS_URL",
    "LOOKALIKE_S3_ENDPOINT",
    "LOOKALIKE_S3_ACCESS_KEY",
    "LOOKALIKE_S3_SECRET_KEY",
    "LOOKALIKE_S3_SECURE",
    "LOOKALIKE_MILVUS_URI",
}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _assert_gone(server: ServerProcess) -> None:
    assert not server.alive()
    assert _group_members(server.pgid) == [], f"{server.name}: group {server.pgid} still has processes"
    assert not _accepts(server.port), f"{server.name}: port {server.port} still accepts connections"
    assert not [f for f in server.stale_files if Path(f).exists()]


# ------------------------------------------------------------------------------------------
# the three servers, through the session fixture


@pytest.mark.integration
def test_env_names_and_values(infra: Infra) -> None:
    env = infra.env()
    assert set(env) == ENV_NAMES
    assert env["LOOKALIKE_NATS_URL"] == f"nats://127.0.0.1:{infra.nats.port}"
    assert env["LOOKALIKE_S3_ENDPOINT"] == f"127.0.0.1:{infra.object_store.port}"
    assert env["LOOKALIKE_S3_SECURE"] == "false"
    assert env["LOOKALIKE_MILVUS_URI"] == f"http://127.0.0.1:{infra.milvus.port}"
    every_port = [p for s in infra.servers() for p in s.ports.values()]
    assert len(every_port) == len(set(every_port)), "two servers share a port"
    assert infra.alive()


@pytest.mark.integration
def test_nats_jetstream_publish_durable_pull_and_ack(nats_url: str) -> None:
    import nats

    stream, subject = f"DEVTEST_{uuid.uuid4().hex[:8]}", f"devtest.{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        nc = await nats.connect(nats_url, connect_timeout=5)
        try:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[subject])
            first = await js.publish(subject, b"one", headers={"Nats-Msg-Id": "m1"})
            again = await js.publish(subject, b"one", headers={"Nats-Msg-Id": "m1"})
            assert not first.duplicate and again.duplicate and again.seq == first.seq
            await js.publish(subject, b"two", headers={"Nats-Msg-Id": "m2"})

            sub = await js.pull_subscribe(subject, durable="worker", stream=stream)
            msgs = await sub.fetch(2, timeout=5)
            assert [m.data for m in msgs] == [b"one", b"two"]
            for m in msgs:
                await m.ack_sync()
            info = await js.consumer_info(stream, "worker")
            assert info.num_ack_pending == 0 and info.num_pending == 0
            assert info.delivered.stream_seq == 2

            # the durable consumer survives a new subscription: nothing is redelivered
            await sub.unsubscribe()
            sub2 = await js.pull_subscribe(subject, durable="worker", stream=stream)
            with pytest.raises(nats.errors.TimeoutError):
                await sub2.fetch(1, timeout=1)
            await js.delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_s3_bucket_put_get_and_presigned_get(s3_settings: S3Settings) -> None:
    client = s3_settings.client()
    bucket = f"devtest-{uuid.uuid4().hex[:12]}"
    body = b"\x89PNG fake image bytes " * 100
    client.make_bucket(bucket)
    try:
        assert client.bucket_exists(bucket)
        client.put_object(bucket, "images/a.png", io.BytesIO(body), len(body), content_type="image/png")
        resp = client.get_object(bucket, "images/a.png")
        try:
            assert resp.read() == body
        finally:
            resp.close()
            resp.release_conn()
        stat = client.stat_object(bucket, "images/a.png")
        assert stat.size == len(body) and stat.content_type == "image/png"
        assert [o.object_name for o in client.list_objects(bucket, prefix="images/")] == ["images/a.png"]

        url = client.presigned_get_object(bucket, "images/a.png", expires=timedelta(minutes=5))
        fetched = httpx.get(url, timeout=10)
        assert fetched.status_code == 200 and fetched.content == body
        assert httpx.get(url.split("?")[0], timeout=10).status_code == 403  # unsigned: refused

        wrong = S3Settings(s3_settings.endpoint, s3_settings.access_key, "not-the-secret").client()
        with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
            wrong.list_buckets()
    finally:
        for obj in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)


@pytest.mark.integration
def test_milvus_hnsw_collection_insert_and_search(milvus_uri: str) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=milvus_uri)
    name = f"devtest_{uuid.uuid4().hex[:8]}"
    dim, n = 16, 2000  # > 1024 rows, so the flushed segment really gets an HNSW index
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index("vec", index_type="HNSW", metric_type="L2", params={"M": 8, "efConstruction": 64})
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

        vectors = np.random.default_rng(7).random((n, dim), dtype=np.float32)
        assert client.insert(name, [{"id": i, "vec": v.tolist()} for i, v in enumerate(vectors)])["insert_count"] == n
        client.flush(name)
        deadline = time.monotonic() + 120
        while (info := client.describe_index(name, "vec"))["indexed_rows"] < n:
            assert time.monotonic() < deadline, f"index not built: {info}"
            time.sleep(0.5)
        assert info["index_type"] == "HNSW"

        hits = client.search(name, data=[vectors[42].tolist(), vectors[1234].tolist()], limit=3,
                             search_params={"metric_type": "L2", "params": {"ef": 32}})
        assert [h[0]["id"] for h in hits] == [42, 1234]
        assert hits[0][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()


# ------------------------------------------------------------------------------------------
# supervisor behaviour


@pytest.mark.integration
def test_stop_leaves_no_process_of_the_group(tmp_path: Path) -> None:
    nats_server = start_nats(tmp_path / "nats")
    store = start_object_store(tmp_path / "s3")
    assert nats_server.alive() and store.alive()
    assert _group_members(store.pgid) == [store.pid]
    assert any(Path(f).exists() for f in store.stale_files)  # weed's sockets in /tmp
    for server in (nats_server, store):
        server.stop()
        _assert_gone(server)
        server.stop()  # a second stop is harmless


@pytest.mark.integration
def test_stop_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"pathlib.Path({str(ready)!r}).touch(); time.sleep(300)")
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(300)")

    def health() -> None:
        assert ready.exists()

    proc = launch_process("stubborn", [sys.executable, "-c", script], data_dir=tmp_path, log_path=tmp_path / "log",
                   ports={"client": free_port()}, health=health, timeout=30)
    members = _group_members(proc.pgid)
    assert len(members) == 2
    began = time.monotonic()
    proc.stop(timeout=1)
    assert time.monotonic() - began < 10
    assert _group_members(proc.pgid) == []
    assert all(_proc_info(pid) is None or _proc_info(pid).state == "Z" for pid in members)


@pytest.mark.integration
def test_parallel_starts_get_distinct_ports(tmp_path: Path) -> None:
    servers: list[ServerProcess] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            servers.append(start_nats(tmp_path / f"n{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        ports = [p for s in servers for p in s.ports.values()]
        assert len(ports) == len(set(ports)) == 6
        assert all(s.alive() and _accepts(s.port) for s in servers)
    finally:
        for s in servers:
            s.stop()


@pytest.mark.integration
def test_retries_with_new_ports_when_a_chosen_port_was_taken(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = devservers.free_port
    handed: list[int] = []

    def racy_free_port(**kwargs: int) -> int:  # the first port "was free" but is taken by bind time
        port = taken if not handed else real_free_port(**kwargs)
        handed.append(port)
        return port

    monkeypatch.setattr(devservers, "free_port", racy_free_port)
    try:
        server = start_nats(tmp_path / "nats")
    finally:
        squatter.close()
    try:
        assert handed[0] == taken and server.port != taken
        assert server.alive() and _accepts(server.port)
        assert "address already in use" in (tmp_path / "nats" / "nats-server.log").read_text()
    finally:
        server.stop()


@pytest.mark.integration
def test_milvus_retries_when_its_client_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus's proxy would silently move to a random port; the supervisor must notice and retry."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = devservers.free_port
    calls: list[int] = []

    def racy_free_port(**kwargs: int) -> int:
        calls.append(1)
        return taken if len(calls) == 1 else real_free_port(**kwargs)  # the first call is "client"

    monkeypatch.setattr(devservers, "free_port", racy_free_port)
    try:
        server = devservers.start_milvus(tmp_path / "milvus", timeout=60)
    finally:
        squatter.close()
    try:
        assert server.port != taken
        assert "get available port when init" in server.log_path.read_text()
        from pymilvus import MilvusClient

        client = MilvusClient(uri=f"http://127.0.0.1:{server.port}")
        assert client.list_collections() == []
        client.close()
    finally:
        server.stop()
    _assert_gone(server)


def test_explicit_port_in_use_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(ServerStartError, match="already in use"):
            start_nats(tmp_path / "nats", port=squatter.getsockname()[1])


def test_failed_start_reports_the_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nats-server"
    fake.write_text("#!/bin/sh\necho 'fatal: the sky is falling' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LOOKALIKE_NATS_SERVER_BIN", str(fake))
    with pytest.raises(ServerStartError) as caught:
        start_nats(tmp_path / "nats")
    message = str(caught.value)
    assert "exited with status 3" in message and "the sky is falling" in message


@pytest.mark.integration
def test_state_file_stop_skips_dead_and_foreign_pids(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    foreign = subprocess.Popen(["sleep", "120"], start_new_session=True)  # stands in for pid reuse
    dead = subprocess.Popen(["true"], start_new_session=True)
    dead.wait()
    try:
        impostor = ServerProcess("milvus", foreign.pid, {"client": 1}, tmp_path, tmp_path / "x.log",
                                 cmdline=["milvus", "run", "standalone"], started="1")
        gone = ServerProcess("object_store", dead.pid, {"client": 2}, tmp_path, tmp_path / "y.log",
                             cmdline=["weed", "mini"], started="1")
        state = tmp_path / "state.json"
        save_state(Infra(server, gone, impostor, "k", "s"), state)
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        loaded = load_state(state)
        assert loaded.nats.alive() and not loaded.object_store.alive() and not loaded.milvus.alive()
        assert loaded.env() == Infra(server, gone, impostor, "k", "s").env()
        assert json.loads(state.read_text())["servers"]["nats"]["pgid"] == server.pid

        assert stop_from_state(state) is True
        assert not state.exists()
        _assert_gone(server)
        assert foreign.poll() is None, "an unrelated process was signalled"
        assert stop_from_state(state) is False
    finally:
        foreign.kill()
        foreign.wait()
        server.stop()


@pytest.mark.integration
def test_cli_up_status_env_down_beside_the_session_servers(tmp_path: Path, infra: Infra) -> None:
    """A second full set (another Milvus included) runs beside the session's without clashes."""
    run_dir = tmp_path / "run"

    def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lookalike.devservers", *args, "--dir", str(run_dir)],
                              capture_output=True, text=True, timeout=timeout, check=False)

    assert cli("status").returncode == 3
    up = cli("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        stack = load_state(run_dir / "infra-state.json")
        assert stack.alive() and infra.alive()
        ours = {p for s in stack.servers() for p in s.ports.values()}
        theirs = {p for s in infra.servers() for p in s.ports.values()}
        assert not ours & theirs
        for s in stack.servers():
            assert str(s.port) in up.stdout
        assert (run_dir / "data" / "milvus" / "configs" / "milvus.yaml").exists()

        env_out = cli("env")
        assert env_out.returncode == 0
        env = dict(line.split("=", 1) for line in env_out.stdout.splitlines())
        assert set(env) == ENV_NAMES and env == stack.env()
        assert (run_dir / "infra.env").read_text() == env_out.stdout

        from pymilvus import MilvusClient

        client = MilvusClient(uri=env["LOOKALIKE_MILVUS_URI"])
        assert client.list_collections() == []
        client.close()

        again = cli("up")
        assert again.returncode == 0 and "already running" in again.stdout
        assert cli("status").returncode == 0
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    for s in stack.servers():
        _assert_gone(s)
    assert cli("status").returncode == 3
    assert infra.alive()


# ------------------------------------------------------------------------------------------
# config rendering (no servers)


def test_yaml_set_replaces_or_adds_nested_keys() -> None:
    text = "etcd:\n  endpoints: x # c\n  use:\n    embed: true\nproxy:\n  ip: # first address\n  port: 1\n"
    text = _yaml_set(text, "proxy.ip", "127.0.0.1")
    text = _yaml_set(text, "etcd.config.path", "/p/e.yaml")
    text = _yaml_set(text, "etcd.use.embed", "true")
    assert text == (
        "etcd:\n  config:\n    path: /p/e.yaml\n  endpoints: x # c\n  use:\n    embed: true\n"
        "proxy:\n  ip: 127.0.0.1 # first address\n  port: 1\n"
    )
    with pytest.raises(ValueError):
        _yaml_set(text, "nosuch.key", "1")


def test_render_template_uses_values_then_defaults() -> None:
    tpl = "a: {{ a_port(int): 5 }}\nb: {{ b_port(int): 6 }}\nc: {{ flag(bool): false }}\nd: {{ path }}\n"
    assert _render_template(tpl, {"a_port": 7, "flag": True, "path": "/x"}) == "a: 7\nb: 6\nc: true\nd: /x\n"
    with pytest.raises(ValueError, match="path"):
        _render_template(tpl, {})
