"""Model runtimes behind one small interface.

A *session* runs one exported model graph. Extractors (``lookalike.models``) only talk to the
:class:`ModelSession` protocol, so the runtime is a deployment choice:

- ``.onnx`` files run in-process on ONNX Runtime (:class:`~lookalike.sessions.onnxrt.OrtSession`);
- a Triton adapter (``sessions/triton.py``, tritonclient) will implement the same protocol against a
  remote model repository.

:func:`open_session` picks the adapter from the model file's format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ModelSession",
    "TensorInfo",
    "UnsupportedModelFormatError",
    "open_session",
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


def open_session(
    path: str | Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
) -> ModelSession:
    """Open ``path`` with the adapter for its file format.

    ``providers`` is a preference list (ONNX Runtime execution provider names); the session keeps only
    those that really load. ``intra_op_threads``/``inter_op_threads`` = 0 leaves the runtime's default.
    """
    path = Path(path)
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
