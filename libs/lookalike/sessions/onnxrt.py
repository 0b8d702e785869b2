"""ONNX Runtime adapter for :class:`lookalike.sessions.ModelSession`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import TensorInfo

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PROVIDERS", "GPU_PROVIDERS", "OrtSession"]

# Preference order when the caller names none. TensorRT is left out of the default: it builds an
# engine per input shape on first use (minutes), so it is opt-in (name it in `providers`).
DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS: frozenset[str] = frozenset(
    {"TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider"}
)

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


def _tensor_info(node: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else (str(d) if d is not None else None) for d in node.shape)
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise TypeError(f"model tensor {node.name!r} has unsupported type {node.type}")
    return TensorInfo(name=node.name, shape=shape, dtype=dtype)


class OrtSession:
    """An ONNX model file loaded in ONNX Runtime.

    ``providers`` is a preference list; entries this onnxruntime build does not offer are dropped
    before loading, and :attr:`providers` reports what the session really uses afterwards
    (``InferenceSession.get_providers()``: a CUDA provider that fails to load - missing libraries, no
    device - falls back to CPU silently, so ``onnxruntime.get_device()`` is not evidence).
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        wanted = list(providers) if providers else list(DEFAULT_PROVIDERS)
        available = set(ort.get_available_providers())
        chosen = [p for p in wanted if p in available]
        skipped = [p for p in wanted if p not in available]
        if skipped:
            log.debug("onnxruntime build lacks %s; available: %s", skipped, sorted(available))
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")  # always keep a provider that can run every op

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads > 0:
            options.inter_op_num_threads = inter_op_threads
        options.log_severity_level = 3  # errors only; provider fallbacks are reported below

        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=chosen)
        self._providers = list(self._session.get_providers())
        missing_gpu = [p for p in chosen if p in GPU_PROVIDERS and p not in self._providers]
        if missing_gpu:
            log.warning(
                "%s did not load for %s (no usable device or libraries); running on %s",
                ", ".join(missing_gpu),
                self.path.name,
                ", ".join(self._providers),
            )
        self._inputs = [_tensor_info(n) for n in self._session.get_inputs()]
        self._outputs = [_tensor_info(n) for n in self._session.get_outputs()]
        log.info("loaded %s on %s", self.path, self._providers)

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def uses_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self._providers)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(output_names) if output_names is not None else [o.name for o in self._outputs]
        arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        results = self._session.run(names, arrays)
        return dict(zip(names, results, strict=True))

    def __repr__(self) -> str:
        return f"OrtSession({str(self.path)!r}, providers={self._providers})"
