"""Model runtimes behind one small interface.

A *session* runs one exported model graph. Extractors (``lookalike.models``) only talk to the
:class:`ModelSession` protocol, so the runtime is a deployment choice:

- backend ``onnxruntime`` (the embedded default): ``.onnx`` files run in-process on ONNX Runtime
  (:class:`~lookalike.sessions.onnxrt.OrtSession`);
- backend ``triton``: the model of the same name and version on a Triton Inference Server, over
  tritonclient gRPC (:class:`~lookalike.sessions.triton.TritonSession`); the model file's path in the
  repository layout ``<repository>/<model>/<version>/model.onnx`` names the model, and the file itself
  need not exist where the caller runs.

:func:`open_session` picks the adapter from the backend (``LOOKALIKE_ENCODER_BACKEND``, carried by the
extractors' ModelSettings) and, for ``onnxruntime``, the model file's format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BACKENDS",
    "ModelSession",
    "TensorInfo",
    "UnsupportedModelFormatError",
    "open_session",
    "open_session_for",
]


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as the model file declares it.

    ``shape`` holds ints for fixed dimensions and a name (``str``) or ``None`` for dynamic ones,
    e.g. ``("batch", 3, 224, 224)``.
    """

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    @property
    def fixed_shape(self) -> tuple[int, ...] | None:
        """The shape without its first (batch) axis if every other axis is fixed, else None."""
        rest = self.shape[1:]
        if all(isinstance(d, int) for d in rest):
            return tuple(int(d) for d in rest)  # type: ignore[arg-type]
        return None


@runtime_checkable
class ModelSession(Protocol):
    """What an extractor needs from a runtime."""

    @property
    def inputs(self) -> list[TensorInfo]: ...

    @property
    def outputs(self) -> list[TensorInfo]: ...

    @property
    def providers(self) -> list[str]:
        """The execution providers / devices really in use, in priority order."""
        ...

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph; returns the requested outputs (all when ``output_names`` is None) by name."""
        ...


class UnsupportedModelFormatError(ValueError):
    """No session adapter handles this model file."""


BACKENDS: tuple[str, ...] = ("onnxruntime", "triton")


def open_session(
    path: str | Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    backend: str = "onnxruntime",
    triton_url: str | None = None,
    triton_ready_timeout_s: float | None = None,
) -> ModelSession:
    """Open ``path`` with the adapter for ``backend`` and its file format.

    ``onnxruntime``: ``providers`` is a preference list (ONNX Runtime execution provider names); the
    session keeps only those that really load. ``intra_op_threads``/``inter_op_threads`` = 0 leaves the
    runtime's default.

    ``triton``: the model ``<model>`` version ``<version>`` of ``path`` =
    ``<repository>/<model>/<version>/<file>`` on the Triton server at ``triton_url`` (gRPC
    ``host:port``), waiting up to ``triton_ready_timeout_s`` (default 30 s) for server and model to be
    ready; raises :class:`~lookalike.sessions.triton.TritonUnavailableError` if they are not.
    """
    path = Path(path)
    if backend == "triton":
        from .triton import DEFAULT_READY_TIMEOUT_S, TritonSession, model_from_path

        if not triton_url:
            raise ValueError("the triton backend needs triton_url (LOOKALIKE_TRITON_URL), e.g. 127.0.0.1:8001")
        name, version = model_from_path(path)
        timeout = DEFAULT_READY_TIMEOUT_S if triton_ready_timeout_s is None else triton_ready_timeout_s
        return TritonSession(triton_url, name, version, ready_timeout_s=timeout)
    if backend != "onnxruntime":
        raise ValueError(f"unknown model backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnxrt import OrtSession

        return OrtSession(
            path,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )
    raise UnsupportedModelFormatError(
        f"no model runtime for {path.name!r}: supported formats are .onnx (ONNX Runtime)"
    )


def open_session_for(path: str | Path, settings: object) -> ModelSession:
    """:func:`open_session` with the runtime options of ``settings`` (``lookalike.models.ModelSettings``
    or any object with fields of the same names): ``encoder_backend`` (``onnxruntime`` | ``triton``),
    ``triton_url``, ``providers``, ``intra_op_threads``, ``inter_op_threads``. What extractors call,
    so that ``LOOKALIKE_ENCODER_BACKEND`` switches every model without touching the extractors.
    """
    return open_session(
        path,
        providers=tuple(getattr(settings, "providers", ()) or ()) or None,
        intra_op_threads=int(getattr(settings, "intra_op_threads", 0) or 0),
        inter_op_threads=int(getattr(settings, "inter_op_threads", 0) or 0),
        backend=str(getattr(settings, "encoder_backend", "onnxruntime") or "onnxruntime"),
        triton_url=getattr(settings, "triton_url", None),
    )
