"""Export SigLIP / CLIP / DINOv2 from local ``transformers`` weights into the model repository.

    python -m lookalike.models.export clip   --weights /path/to/clip-vit-base-patch32 [--repository models] [--name clip]
    python -m lookalike.models.export siglip --weights /path/to/siglip-base-patch16-224
    python -m lookalike.models.export dinov2 --weights /path/to/dinov2-small --name custom:dinov2-small

``--weights`` is a folder as ``save_pretrained`` writes it (``config.json``, ``model.safetensors``, and
``preprocessor_config.json`` / tokenizer files when the model has them); nothing is downloaded
(``local_files_only``). Writes, for extractor ``clip`` (folder = the name without ``custom:``)::

    <repository>/clip/lookalike.json        the manifest: dimension, metric, preprocessing, towers
    <repository>/clip/config.pbtxt          Triton (onnxruntime backend), dynamic batching
    <repository>/clip/1/model.onnx          pixel_values [N,3,H,W] -> image_embeds [N,D], L2-normalised
    <repository>/clip-text/config.pbtxt     (CLIP, SigLIP) the text tower
    <repository>/clip-text/1/model.onnx     input_ids (+ attention_mask) [N,L] -> text_embeds [N,D]
    <repository>/clip-text/tokenizer.json   the fast tokenizer (``tokenizers`` format), for serving
    <repository>/clip*/configs/python.pbtxt + 1/model.py   the same models for Triton's python backend

Towers: CLIP/SigLIP ``get_image_features`` / ``get_text_features`` (the projected embeddings the
contrastive loss compares); DINOv2 ``pooler_output`` (the final-layernormed CLS token). Preprocessing
comes from ``preprocessor_config.json`` when present (mean/std, resize, crop, resampling), else from
the family's published recipe. After writing, ONNX Runtime is checked against PyTorch on the same
inputs, and the folder is loaded back through the registry.

Needs the ``export`` extra (torch, transformers, onnx). Tested on small randomly initialised configs
(tests/test_exports.py) - shapes and plumbing only; no pretrained SigLIP/CLIP/DINOv2 weights are
available here, so no quality is claimed for them.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import (
    FAMILIES,
    MANIFEST_FILE,
    ImageTower,
    ModelManifest,
    Preprocessing,
    TextTower,
    valid_extractor_name,
)

log = logging.getLogger(__name__)

__all__ = ["HFExportReport", "export_hf", "folder_for", "preprocessing_from_hf", "triton_config"]

OPSET = 17
MAX_BATCH_SIZE = 32
MAX_QUEUE_DELAY_US = 2000
TOLERANCE = 1e-4  # |onnxruntime - torch| on unit-length embeddings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL resampling codes as transformers stores them in preprocessor_config.json
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

# The families' published recipes, used when the weights folder has no preprocessor_config.json.
FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    # CLIPImageProcessor: shorter side 224 (bicubic), centre crop 224, CLIP statistics
    "clip": {"resize": "center_crop", "crop_ratio": 1.0, "resample": "bicubic", "mean": CLIP_MEAN, "std": CLIP_STD},
    # SiglipImageProcessor: 224 x 224 without crop (bicubic), mean = std = 0.5
    "siglip": {"resize": "squash", "crop_ratio": 1.0, "resample": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3},
    # BitImageProcessor as DINOv2 ships it: shorter side 256 (bicubic), centre crop 224, ImageNet statistics
    "dinov2": {"resize": "center_crop", "crop_ratio": 224 / 256, "resample": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}
MODEL_TYPES = {"clip": ("clip",), "siglip": ("siglip",), "dinov2": ("dinov2",)}
TEXT_MAX_LENGTH = {"clip": 77, "siglip": 64}


def folder_for(name: str) -> str:
    """The repository folder of extractor ``name`` (``custom:foo`` -> ``foo``)."""
    return name.split(":", 1)[1] if name.startswith("custom:") else name


def _size_hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    return None


def preprocessing_from_hf(family: str, weights: Path, default_size: int) -> Preprocessing:
    """The image recipe: ``preprocessor_config.json`` where it says, the family's recipe elsewhere."""
    recipe = dict(FAMILY_RECIPES[family])
    size = (default_size, default_size)
    path = Path(weights) / "preprocessor_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        if cfg.get("image_mean") and cfg.get("image_std"):
            recipe["mean"] = tuple(float(v) for v in cfg["image_mean"])
            recipe["std"] = tuple(float(v) for v in cfg["image_std"])
        if cfg.get("do_normalize") is False:
            recipe["mean"], recipe["std"] = (0.0,) * 3, (1.0,) * 3
        if isinstance(cfg.get("resample"), int) and cfg["resample"] in _PIL_RESAMPLE:
            recipe["resample"] = _PIL_RESAMPLE[cfg["resample"]]
        resize_to = cfg.get("size")
        crop = _size_hw(cfg.get("crop_size")) if cfg.get("do_center_crop", False) else None
        if crop is not None:
            size = crop
            recipe["resize"] = "center_crop"
            if isinstance(resize_to, dict) and "shortest_edge" in resize_to:
                recipe["crop_ratio"] = min(1.0, min(crop) / int(resize_to["shortest_edge"]))
            elif isinstance(resize_to, int):
                recipe["crop_ratio"] = min(1.0, min(crop) / resize_to)
            else:
                recipe["crop_ratio"] = 1.0
        elif _size_hw(resize_to) is not None:
            size = _size_hw(resize_to)  # type: ignore[assignment]
            exact = isinstance(resize_to, dict) and "height" in resize_to
            recipe["resize"] = "squash" if exact else "center_crop"
            recipe["crop_ratio"] = 1.0
        if cfg.get("do_rescale") is False or cfg.get("rescale_factor", 1 / 255) not in (1 / 255, 0.00392156862745098):
            raise ValueError(f"{path}: only 1/255 rescaling is supported, got {cfg.get('rescale_factor')}")
        if cfg.get("do_convert_rgb") is False:
            log.info("%s: do_convert_rgb is false; images are RGB here anyway", path)
    return Preprocessing(size=size, **recipe)


def triton_config(
    name: str,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US,
) -> str:
    """A ``config.pbtxt`` for Triton's onnxruntime backend: (name, TYPE_*, dims without batch) per tensor."""

    def tensors(items: list[tuple[str, str, list[int]]]) -> str:
        blocks = [
            f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}'
            for n, t, dims in items
        ]
        return ",\n".join(blocks)

    preferred = sorted({b for b in (8, 16, max_batch_size) if b <= max_batch_size})
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{tensors(inputs)}\n]\noutput [\n{tensors(outputs)}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        "instance_group [\n  {\n    count: 1\n    kind: KIND_AUTO\n  }\n]\n"
    )


@dataclass
class HFExportReport:
    name: str
    family: str
    model_dir: Path
    image_onnx: Path
    text_dir: Path | None = None
    text_onnx: Path | None = None
    dimension: int = 0
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def _load_model(family: str, weights: Path) -> Any:
    import transformers

    config = transformers.AutoConfig.from_pretrained(weights, local_files_only=True)
    if config.model_type not in MODEL_TYPES[family]:
        raise ValueError(
            f"{weights}: model_type {config.model_type!r} is not {family} (expected {', '.join(MODEL_TYPES[family])})"
        )
    classes = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel, "dinov2": transformers.Dinov2Model}
    # eager attention traces to plain MatMul/Softmax, which every ONNX runtime (and TensorRT) runs
    model = classes[family].from_pretrained(weights, local_files_only=True, attn_implementation="eager")
    model.eval()
    return model


def _features(out: Any) -> Any:
    """transformers 4 returns a tensor from get_*_features, 5 a model output with pooler_output."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _towers(family: str, model: Any) -> tuple[Any, Any | None]:
    import torch

    def unit(x: torch.Tensor) -> torch.Tensor:
        # x / max(||x||, eps) written out (F.normalize traces to an Expand that loses the static dim)
        return x / torch.linalg.vector_norm(x, ord=2, dim=-1, keepdim=True).clamp_min(1e-12)

    class ImageTowerModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            if family == "dinov2":
                return unit(self.model(pixel_values=pixel_values).pooler_output)
            return unit(_features(self.model.get_image_features(pixel_values=pixel_values)))

    class TextTowerModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            return unit(_features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)))

    image = ImageTowerModule().eval()
    text = TextTowerModule().eval() if family in ("clip", "siglip") else None
    return image, text


def _onnx_export(module: Any, args: tuple, path: Path, input_names: list[str], output_name: str, dynamic: dict) -> None:
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about python control flow on shapes, deprecations
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes={**dynamic, output_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            export_params=True,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    path.write_bytes(buffer.getvalue())


def _save_tokenizer(weights: Path, target: Path) -> Any:
    """The fast tokenizer as ``tokenizer.json``; returns the transformers tokenizer."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(weights, local_files_only=True)
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        try:
            from transformers.convert_slow_tokenizer import convert_slow_tokenizer

            backend = convert_slow_tokenizer(tokenizer)
        except Exception as exc:  # noqa: BLE001 - any converter failure means: no fast tokenizer
            raise ValueError(
                f"{weights}: the tokenizer has no fast (tokenizers) form and cannot be converted ({exc}); "
                "save one with tokenizer.json beside the weights"
            ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(target))
    return tokenizer


def _sample_pixels(pre: Preprocessing, n: int = 3) -> np.ndarray:
    from PIL import Image

    images = []
    try:
        from skimage import data

        images = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]
    except ImportError:  # pragma: no cover
        pass
    rng = np.random.default_rng(0)
    while len(images) < n:
        images.append(Image.fromarray(rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)))
    return pre.recipe()(images[:n])


def export_hf(
    family: str,
    weights: str | Path,
    repository: str | Path,
    *,
    name: str | None = None,
    description: str = "",
    metric: str = "COSINE",
    max_batch_size: int = MAX_BATCH_SIZE,
    verify: bool = True,
    overwrite: bool = False,
) -> HFExportReport:
    """Export ``family`` (clip, siglip, dinov2) weights at ``weights`` as extractor ``name`` (default: the family)."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    name = name or family
    if not valid_extractor_name(name):
        raise ValueError(f"extractor name {name!r}: use {family} or custom:<name>")
    weights, repository = Path(weights), Path(repository)
    if not (weights / "config.json").is_file():
        raise FileNotFoundError(f"{weights}: no config.json (expected a save_pretrained folder)")
    folder = folder_for(name)
    model_dir = repository / folder
    text_dir = repository / f"{folder}-text" if family in TEXT_MAX_LENGTH else None
    for d in (model_dir, text_dir):
        if d is not None and d.exists():
            if not overwrite:
                raise FileExistsError(f"{d} exists (pass overwrite=True / --overwrite to replace it)")
            shutil.rmtree(d)

    model = _load_model(family, weights)
    config = model.config
    vision = getattr(config, "vision_config", config)
    pre = preprocessing_from_hf(family, weights, int(getattr(vision, "image_size", 224)))
    if family == "dinov2" and not (weights / "preprocessor_config.json").is_file():
        pre = pre.model_copy(update={"size": (224, 224)})  # DINOv2's config says 518; its processor crops 224
    image_tower, text_tower = _towers(family, model)
    h, w = pre.size
    pixels = torch.from_numpy(_sample_pixels(pre))
    with torch.no_grad():
        dim = int(image_tower(pixels[:1]).shape[-1])

    report = HFExportReport(name=name, family=family, model_dir=model_dir, image_onnx=model_dir / "1" / "model.onnx", dimension=dim)
    _onnx_export(image_tower, (pixels[:2],), report.image_onnx, ["pixel_values"], "image_embeds", {"pixel_values": {0: "batch"}})
    (model_dir / "config.pbtxt").write_text(
        triton_config(folder, [("pixel_values", "TYPE_FP32", [3, h, w])], [("image_embeds", "TYPE_FP32", [dim])], max_batch_size=max_batch_size)
    )

    text_manifest = None
    token_feeds: dict[str, np.ndarray] = {}
    if text_tower is not None and text_dir is not None:
        text_config = getattr(config, "text_config", config)
        max_length = min(TEXT_MAX_LENGTH[family], int(getattr(text_config, "max_position_embeddings", 77)))
        tokenizer = _save_tokenizer(weights, text_dir / "tokenizer.json")
        padding = "max_length" if family == "siglip" else "longest"  # SigLIP was trained on max_length padding
        use_mask = family == "clip"  # SigLIP's tokenizer returns no attention mask (its input names: input_ids)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch = tokenizer(
            ["a photo of a cat", "a diagram"], padding=padding, max_length=max_length, truncation=True, return_tensors="np"
        )
        token_feeds = {"input_ids": batch["input_ids"].astype(np.int64)}
        inputs = ["input_ids"]
        args: tuple = (torch.from_numpy(token_feeds["input_ids"]),)
        # SigLIP pools the last position, so its sequence is fixed at max_length; CLIP's is dynamic.
        axes = {0: "batch", 1: "sequence"} if padding == "longest" else {0: "batch"}
        dynamic = {"input_ids": axes}
        if use_mask:
            token_feeds["attention_mask"] = batch["attention_mask"].astype(np.int64)
            inputs.append("attention_mask")
            args = args + (torch.from_numpy(token_feeds["attention_mask"]),)
            dynamic["attention_mask"] = axes
        report.text_dir, report.text_onnx = text_dir, text_dir / "1" / "model.onnx"
        _onnx_export(text_tower, args, report.text_onnx, inputs, "text_embeds", dynamic)
        seq = max_length if padding == "max_length" else -1
        (text_dir / "config.pbtxt").write_text(
            triton_config(
                text_dir.name,
                [(n, "TYPE_INT64", [seq]) for n in inputs],
                [("text_embeds", "TYPE_FP32", [dim])],
                max_batch_size=max_batch_size,
            )
        )
        text_manifest = TextTower(
            model=text_dir.name,
            input_ids="input_ids",
            attention_mask="attention_mask" if use_mask else None,
            output="text_embeds",
            tokenizer="tokenizer.json",
            max_length=max_length,
            padding=padding,
            pad_id=int(pad_id),
            lowercase=bool(getattr(tokenizer, "do_lower_case", False)),
        )

    import transformers

    manifest = ModelManifest(
        extractor=name,
        family=family,  # type: ignore[arg-type]
        description=description or f"{family} ({weights.name}), exported with transformers {transformers.__version__}",
        dimension=dim,
        metric=metric,  # type: ignore[arg-type]
        image=ImageTower(input="pixel_values", output="image_embeds", preprocess=pre),
        text=text_manifest,
        source={"weights": weights.name, "transformers": transformers.__version__, "torch": torch.__version__},
    )
    (model_dir / MANIFEST_FILE).write_text(manifest.dump())
    # the python-backend side too (configs/python.pbtxt + 1/model.py), for the Triton that has only
    # that backend (the one nvidia-pytriton bundles); NVIDIA's image serves config.pbtxt directly
    from lookalike.sessions.triton import add_python_backend

    for folder_path in (model_dir, report.text_dir):
        if folder_path is not None:
            add_python_backend(folder_path)

    if verify:
        report.max_abs_diff = _verify(image_tower, text_tower, report, pixels.numpy(), token_feeds)
        worst = max(report.max_abs_diff.values())
        if worst > TOLERANCE:
            raise RuntimeError(f"{name}: ONNX Runtime differs from PyTorch by {worst:.2e} (> {TOLERANCE})")
    return report


def _verify(image_tower: Any, text_tower: Any, report: HFExportReport, pixels: np.ndarray, tokens: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| per tower, at batch 1 and the full sample batch."""
    import torch

    from lookalike.sessions.onnxrt import OrtSession

    diffs = {}
    session = OrtSession(report.image_onnx, providers=["CPUExecutionProvider"])
    worst = 0.0
    for sub in (pixels[:1], pixels):
        with torch.no_grad():
            ref = image_tower(torch.from_numpy(sub)).numpy()
        worst = max(worst, float(np.abs(session.run({"pixel_values": sub})["image_embeds"] - ref).max()))
    diffs["image_embeds"] = worst
    if text_tower is not None and report.text_onnx is not None:
        session = OrtSession(report.text_onnx, providers=["CPUExecutionProvider"])
        worst = 0.0
        for rows in (slice(0, 1), slice(None)):
            feeds = {k: v[rows] for k, v in tokens.items()}
            with torch.no_grad():
                ref = text_tower(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask") if k in feeds)).numpy()
            worst = max(worst, float(np.abs(session.run(feeds)["text_embeds"] - ref).max()))
        diffs["text_embeds"] = worst
    return diffs
