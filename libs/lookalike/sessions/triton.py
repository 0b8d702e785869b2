"""Triton Inference Server adapter for :class:`lookalike.sessions.ModelSession` (tritonclient gRPC).

A :class:`TritonSession` runs one model of a remote Triton server as if it were a local graph:

- at start it checks that the server is live and ready and that the model is ready (waiting up to
  ``ready_timeout_s``), and fails with :class:`TritonUnavailableError` saying which of the three is
  not - for a model, its state and reason from the server's repository index;
- input and output names, shapes and dtypes come from the model's metadata and configuration on the
  server (``max_batch_size`` > 0 makes the first axis the batch axis), never from this code;
- :meth:`TritonSession.run` splits a batch larger than the model's ``max_batch_size`` into several
  requests and concatenates the outputs, so callers see one graph with a free batch axis.

The model repository (``models/``) serves two kinds of Triton with the same model names:

- NVIDIA's Triton image (onnxruntime / TensorRT backends) reads ``<model>/config.pbtxt``
  (``platform: "onnxruntime_onnx"``);
- the ``tritonserver`` that PyPI ``nvidia-pytriton`` bundles has only the python backend; started
  with ``--model-config-name=python`` it reads ``<model>/configs/python.pbtxt`` (made from
  config.pbtxt by :func:`python_backend_config`) and runs ``<model>/<version>/model.py``, which runs
  the same ``model.onnx`` with ONNX Runtime (``lookalike.devservers.start_triton`` starts it).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import TensorInfo

log = logging.getLogger(__name__)

__all__ = [
    "PYTHON_BACKEND_MODEL",
    "PYTHON_CONFIG_NAME",
    "TritonError",
    "TritonSession",
    "TritonUnavailableError",
    "add_python_backend",
    "model_from_path",
    "python_backend_config",
]

# `tritonserver --model-config-name=python` reads <model>/configs/python.pbtxt instead of config.pbtxt.
PYTHON_CONFIG_NAME = "python"
# The python-backend model: runs the model.onnx beside it with ONNX Runtime. One generic file; every
# ONNX model of the repository gets a copy (add_python_backend).
PYTHON_BACKEND_MODEL = Path(__file__).resolve().parents[3] / "models" / "effnet-lite0" / "1" / "model.py"

DEFAULT_READY_TIMEOUT_S = 30.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0
_POLL_S = 0.25


class TritonError(RuntimeError):
    """Triton refused or failed a request (bad input, model error ...)."""


class TritonUnavailableError(TritonError):
    """The server is not reachable / not ready, or the model is missing or not ready."""


def model_from_path(path: str | Path) -> tuple[str, str]:
    """``<repository>/<model>/<version>/model.onnx`` -> (model name, version) as Triton names them."""
    path = Path(path)
    version = path.parent.name
    if not version.isdigit():
        raise ValueError(
            f"{path}: not in Triton's repository layout <repository>/<model>/<version>/<file> "
            "(the version folder must be a number)"
        )
    return path.parent.parent.name, version


def _client_module() -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient


def _is_unavailable(exc: BaseException) -> bool:
    status = str(getattr(exc, "status", lambda: "")() or "")
    return "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status


class TritonSession:
    """One model on a Triton server, behind the :class:`~lookalike.sessions.ModelSession` protocol.

    ``url`` is the server's gRPC ``host:port``; ``model_version`` "" means the server's policy
    (latest). The tritonclient gRPC client is thread-safe for unary calls, so one session serves
    every thread of the encoder.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str = "",
        *,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        grpcclient = _client_module()
        self.url = url
        self.model_name = model_name
        self.model_version = str(model_version or "")
        self.request_timeout_s = request_timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._wait_ready(ready_timeout_s)
            self._read_model()
        except BaseException:
            self.close()
            raise
        log.info(
            "triton model %s (version %s) at %s: inputs %s, outputs %s, max batch %d, %s",
            model_name, self.model_version or "latest", url,
            [(t.name, t.shape, str(t.dtype)) for t in self._inputs],
            [(t.name, t.shape, str(t.dtype)) for t in self._outputs],
            self.max_batch_size, self._kind,
        )

    # ---------------------------------------------------------------------------------- readiness

    def _describe(self) -> str:
        return f"Triton at {self.url}, model {self.model_name!r}" + (
            f" version {self.model_version}" if self.model_version else ""
        )

    def _probe(self) -> str | None:
        """None when server and model are ready, else why not."""
        try:
            if not self._client.is_server_live(client_timeout=5):
                return f"Triton at {self.url} is not live"
            server_ready = self._client.is_server_ready(client_timeout=5)
            model_ready = self._client.is_model_ready(self.model_name, self.model_version, client_timeout=5)
            if server_ready and model_ready:
                return None
            model = f"model {self.model_name!r} is ready" if model_ready else self._model_state()
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, deadline ...
            return f"cannot reach Triton at {self.url}: {exc}"
        if not server_ready:
            return f"Triton at {self.url} is live but not ready; {model}"
        return f"Triton at {self.url}: {model}"

    def _model_state(self) -> str:
        """Why the model is not ready, from the server's repository index."""
        label = f"model {self.model_name!r}" + (f" version {self.model_version}" if self.model_version else "")
        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=5)
        except Exception as exc:  # noqa: BLE001
            return f"{label} is not ready (repository index unavailable: {exc})"
        models = index.get("models", [])
        entries = [m for m in models if m.get("name") == self.model_name]
        if self.model_version:
            entries = [m for m in entries if m.get("version", self.model_version) == self.model_version] or entries
        if not entries:
            names = sorted({m.get("name", "?") for m in models})
            return f"{label}: no such model in the server's repository (it has: {', '.join(names) or 'no models'})"
        states = "; ".join(
            f"version {m.get('version', '?')}: {m.get('state') or 'not loaded'}"
            + (f" ({m['reason']})" if m.get("reason") else "")
            for m in entries
        )
        return f"{label} is not ready: {states}"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            problem = self._probe()
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise TritonUnavailableError(problem)
            time.sleep(_POLL_S)

    def check_ready(self) -> None:
        """Raise :class:`TritonUnavailableError` if the server or the model is not ready now."""
        problem = self._probe()
        if problem is not None:
            raise TritonUnavailableError(problem)

    # ---------------------------------------------------------------------------------- metadata

    def _read_model(self) -> None:
        from tritonclient.utils import triton_to_np_dtype

        try:
            metadata = self._client.get_model_metadata(self.model_name, self.model_version, client_timeout=10)
            config = self._client.get_model_config(self.model_name, self.model_version, client_timeout=10).config
        except Exception as exc:
            raise TritonUnavailableError(f"{self._describe()}: cannot read its metadata: {exc}") from exc
        self.max_batch_size = int(config.max_batch_size)
        self.platform = metadata.platform or config.backend or config.platform
        self.versions = list(metadata.versions)
        groups = list(config.instance_group)
        kinds = sorted({type(g).Kind.Name(g.kind) for g in groups}) if groups else ["KIND_AUTO"]
        self._kind = "+".join(kinds)

        def info(tensor: Any) -> TensorInfo:
            dtype = triton_to_np_dtype(tensor.datatype)
            if dtype is None:
                raise TritonError(f"{self._describe()}: tensor {tensor.name} has unsupported type {tensor.datatype}")
            dims: list[int | str | None] = [int(d) if int(d) >= 0 else None for d in tensor.shape]
            if self.max_batch_size > 0 and dims:
                dims[0] = "batch"  # Triton prepends the batch axis (-1) when the model batches
            return TensorInfo(name=tensor.name, shape=tuple(dims), dtype=np.dtype(dtype))

        self._inputs = [info(t) for t in metadata.inputs]
        self._outputs = [info(t) for t in metadata.outputs]
        self._datatypes = {t.name: t.datatype for t in (*metadata.inputs, *metadata.outputs)}
        if not self._inputs or not self._outputs:
            raise TritonError(f"{self._describe()}: the server reports no inputs or no outputs")

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        """Where the model runs, as the server's configuration says (instance group kind)."""
        return [f"Triton:{self._kind}@{self.url}"]

    @property
    def uses_gpu(self) -> bool:
        return "KIND_GPU" in self._kind

    # ---------------------------------------------------------------------------------- inference

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise TritonError(f"{self._describe()}: session is closed")
        names = list(output_names) if output_names is not None else [o.name for o in self._outputs]
        known_outputs = {o.name for o in self._outputs}
        unknown = [n for n in names if n not in known_outputs]
        if unknown:
            raise ValueError(f"{self.model_name}: unknown outputs {unknown}; it has {sorted(known_outputs)}")
        expected = {t.name: t for t in self._inputs}
        if set(feeds) != set(expected):
            raise ValueError(f"{self.model_name}: feeds {sorted(feeds)} do not match its inputs {sorted(expected)}")
        arrays: dict[str, np.ndarray] = {}
        for name, info in expected.items():
            array = np.asarray(feeds[name])
            if array.dtype != info.dtype:
                raise TypeError(f"{self.model_name}: input {name} must be {info.dtype}, got {array.dtype}")
            if len(array.shape) != len(info.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(info.shape, array.shape)
            ):
                raise ValueError(f"{self.model_name}: input {name} has shape {array.shape}, expected {info.shape}")
            arrays[name] = np.ascontiguousarray(array)
        if not names:
            return {}
        total = next(iter(arrays.values())).shape[0] if self.max_batch_size > 0 else 0
        step = self.max_batch_size if self.max_batch_size > 0 else 0
        if step == 0 or total <= step:
            return self._infer(arrays, names)
        parts = [self._infer({k: v[i : i + step] for k, v in arrays.items()}, names) for i in range(0, total, step)]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in names}

    def _infer(self, arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        grpcclient = _client_module()
        inputs = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), self._datatypes[name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(n) for n in names]
        try:
            result = self._client.infer(
                self.model_name, inputs, model_version=self.model_version, outputs=outputs,
                client_timeout=self.request_timeout_s,
            )
        except Exception as exc:
            cls = TritonUnavailableError if _is_unavailable(exc) else TritonError
            raise cls(f"{self._describe()}: inference failed: {exc}") from exc
        out: dict[str, np.ndarray] = {}
        for n in names:
            value = result.as_numpy(n)
            if value is None:
                raise TritonError(f"{self._describe()}: the response has no output {n}")
            out[n] = value
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a broken channel
            log.debug("closing the triton client failed", exc_info=True)

    def __enter__(self) -> TritonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonSession({self.url!r}, {self.model_name!r}, version={self.model_version or 'latest'!r})"


# ------------------------------------------------------------------------------------------------
# the model repository's python-backend side


def python_backend_config(config_text: str, *, onnx_file: str = "model.onnx") -> str:
    """The python-backend ``configs/python.pbtxt`` for a model whose ``config.pbtxt`` (onnxruntime,
    TensorRT ...) is ``config_text``: same name, tensors, max batch size and dynamic batching;
    ``backend: "python"`` on CPU instances, running ``onnx_file`` with ONNX Runtime."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse(config_text, mc.ModelConfig())
    config.ClearField("platform")
    config.backend = "python"
    config.ClearField("default_model_filename")
    config.ClearField("optimization")  # accelerators of the onnxruntime/TensorRT backends
    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        group.ClearField("gpus")
    config.parameters["onnx_file"].string_value = onnx_file
    header = ("# Python-backend configuration (tritonserver --model-config-name=python), made from\n"
              "# ../config.pbtxt by lookalike.sessions.triton.python_backend_config: do not edit by hand.\n")
    return header + text_format.MessageToString(config)


def add_python_backend(model_dir: str | Path, *, onnx_file: str = "model.onnx") -> list[Path]:
    """Give a model of the repository its python-backend side: ``configs/python.pbtxt`` from its
    ``config.pbtxt``, and the generic ``model.py`` in every version folder that holds ``onnx_file``.
    Returns the files written."""
    model_dir = Path(model_dir)
    written: list[Path] = []
    target = model_dir / "configs" / f"{PYTHON_CONFIG_NAME}.pbtxt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(python_backend_config((model_dir / "config.pbtxt").read_text(), onnx_file=onnx_file))
    written.append(target)
    for version in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        if not (version / onnx_file).is_file():
            continue
        dst = version / "model.py"
        if dst.resolve() != PYTHON_BACKEND_MODEL:
            shutil.copyfile(PYTHON_BACKEND_MODEL, dst)
            written.append(dst)
    return written
