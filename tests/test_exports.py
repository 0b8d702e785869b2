"""SigLIP / CLIP / DINOv2 export round trips on SMALL RANDOMLY INITIALISED models.

No pretrained weights of these families can be had here, so each test builds a tiny random model
(2 layers, 32 wide) with ``transformers``, saves it as a user's weights folder would look
(``save_pretrained`` + tokenizer + preprocessor config), exports it with
``python -m lookalike.models.export`` code, loads the written folder back through the extractor
registry and checks shapes, plumbing and agreement with the PyTorch model. Nothing here says anything
about retrieval quality. Needs the ``export`` extra (torch, transformers, onnx).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "onnx")),
    reason="export tests need the export extra (torch, transformers, onnx): pip install -e '.[export]'",
)

from lookalike.models import (  # noqa: E402
    EXTRACTORS,
    ModelSettings,
    OnnxModelExtractor,
    TextNotSupportedError,
    available_extractors,
    get_extractor,
    load_manifest,
)
from lookalike.models.hf_export import export_hf, preprocessing_from_hf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = "a photo of the cat dog car cup coffee rocket astronaut diagram red blue big small".split()
TEXTS = ["a photo of a cat", "a photo of a dog", "Big RED rocket!", "astronaut"]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def images() -> list[Image.Image]:
    return [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("astronaut", "chelsea", "coffee")]


# --- tiny random "user weights" -------------------------------------------------------------------


def tiny_tokenizer(folder: Path, family: str) -> int:
    """A word-level fast tokenizer with the family's special-token template, saved like a real one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = "<bos> $A <eos>" if family == "clip" else "$A <eos>"  # SigLIP appends </s> only
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<bos>", 2), ("<eos>", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")
    fast.save_pretrained(folder)
    return len(vocab)


def tiny_weights(family: str, folder: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if family == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**layers, image_size=28, patch_size=14))
        processor = {  # DINOv2's BitImageProcessor recipe, scaled down: shorter side 64, centre 56
            "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 64},
            "do_center_crop": True, "crop_size": {"height": 56, "width": 56}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225], "resample": 3,
        }
    else:
        vocab = tiny_tokenizer(folder, family)
        text = dict(**layers, vocab_size=vocab, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        vision = dict(**layers, image_size=32, patch_size=8)
        if family == "clip":
            config = transformers.CLIPConfig(text_config={**text, "max_position_embeddings": 77}, vision_config=vision, projection_dim=16)
            model = transformers.CLIPModel(config)
            processor = {  # CLIPImageProcessor's recipe at 32 px
                "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
                "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "resample": 3,
            }
        else:  # siglip: no preprocessor_config.json -> the family's recipe (squash, mean = std = 0.5)
            config = transformers.SiglipConfig(text_config={**text, "max_position_embeddings": 16}, vision_config=vision)
            model = transformers.SiglipModel(config)
            processor = None
    model.eval().save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exports")
    repository = root / "models"
    out = {"repository": repository, "weights": {}, "reports": {}}
    for family in ("clip", "siglip", "dinov2"):
        weights = tiny_weights(family, root / "weights" / family)
        out["weights"][family] = weights
        out["reports"][family] = export_hf(family, weights, repository)
    return out


def reference_model(family: str, weights: Path):
    import transformers

    cls = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel, "dinov2": transformers.Dinov2Model}[family]
    return cls.from_pretrained(weights, local_files_only=True).eval()


def torch_image_embeddings(family: str, model, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(pixels)
        out = model(pixel_values=x).pooler_output if family == "dinov2" else model.get_image_features(pixel_values=x)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(out, dim=-1).numpy()


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["clip", "siglip", "dinov2"])
def test_export_writes_the_repository_layout(exported, family):
    repository, report = exported["repository"], exported["reports"][family]
    model_dir = repository / family
    assert report.model_dir == model_dir and report.image_onnx == model_dir / "1" / "model.onnx"
    assert {p.name for p in model_dir.iterdir()} == {"1", "config.pbtxt", "configs", "lookalike.json"}
    assert {p.name for p in (model_dir / "1").iterdir()} == {"model.onnx", "model.py"}  # + Triton python backend
    manifest = load_manifest(model_dir / "lookalike.json")
    assert manifest.extractor == family and manifest.family == family and manifest.metric == "COSINE"
    assert manifest.dimension == report.dimension == (16 if family == "clip" else 32)
    assert max(report.max_abs_diff.values()) < 1e-4  # ONNX Runtime vs PyTorch, checked by the export
    if family == "dinov2":
        assert manifest.text is None and report.text_dir is None
    else:
        text_dir = repository / f"{family}-text"
        assert report.text_dir == text_dir and manifest.text is not None and manifest.text.model == f"{family}-text"
        assert {p.name for p in text_dir.iterdir()} == {"1", "config.pbtxt", "configs", "tokenizer.json"}
        assert not (text_dir / "lookalike.json").exists()  # a tower, not an extractor of its own
    pre = manifest.image.preprocess
    if family == "clip":  # from preprocessor_config.json: shorter side 32, centre 32, CLIP statistics
        assert (pre.size, pre.resize, pre.crop_ratio, pre.resample) == ((32, 32), "center_crop", 1.0, "bicubic")
        assert list(pre.mean) == CLIP_MEAN and manifest.text.padding == "longest" and manifest.text.attention_mask
    elif family == "siglip":  # no preprocessor_config.json: SigLIP's recipe at the config's image size
        assert (pre.size, pre.resize, pre.mean, pre.std) == ((32, 32), "squash", (0.5,) * 3, (0.5,) * 3)
        assert manifest.text.padding == "max_length" and manifest.text.max_length == 16
        assert manifest.text.attention_mask is None
    else:  # shorter side 64, centre 56 -> crop ratio 0.875
        assert (pre.size, pre.resize, pre.crop_ratio) == ((56, 56), "center_crop", 0.875)


@pytest.mark.parametrize("family", ["clip", "siglip", "dinov2"])
def test_triton_configs_match_the_graphs(exported, family):
    from lookalike.sessions import open_session

    repository = exported["repository"]
    folders = [family] + ([f"{family}-text"] if family != "dinov2" else [])
    for folder in folders:
        python_config = (repository / folder / "configs" / "python.pbtxt").read_text()
        assert f'name: "{folder}"' in python_config and 'backend: "python"' in python_config
        config = (repository / folder / "config.pbtxt").read_text()
        assert f'name: "{folder}"' in config and 'platform: "onnxruntime_onnx"' in config
        assert "max_batch_size: 32" in config and "dynamic_batching" in config
        session = open_session(repository / folder / "1" / "model.onnx")
        for tensor in session.inputs + session.outputs:
            assert f'name: "{tensor.name}"' in config
            dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in tensor.shape[1:])
            assert f"dims: [ {dims} ]" in config, (folder, tensor)
            assert not isinstance(tensor.shape[0], int)  # dynamic batch axis


@pytest.mark.parametrize("family", ["clip", "siglip", "dinov2"])
def test_exported_folder_is_an_extractor_that_matches_pytorch(exported, family):
    settings = ModelSettings(model_repository=exported["repository"])
    spec = available_extractors(settings)[family]
    assert (spec.dim, spec.metric, spec.vector_type) == (exported["reports"][family].dimension, "COSINE", "float")
    assert spec.supports_text == (family != "dinov2")
    extractor = get_extractor(family, settings)
    assert isinstance(extractor, OnnxModelExtractor)
    pictures = images()
    vectors = extractor.encode(pictures)
    assert vectors.shape == (3, spec.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    model = reference_model(family, exported["weights"][family])
    ours = extractor.preprocess(pictures)
    np.testing.assert_allclose(vectors, torch_image_embeddings(family, model, ours), atol=1e-4)
    weights = exported["weights"][family]
    if (weights / "preprocessor_config.json").is_file():
        # our one-step crop+resize vs transformers' image processor (resize, then crop): same recipe
        import transformers

        hf = transformers.AutoImageProcessor.from_pretrained(weights)(images=pictures, return_tensors="np")["pixel_values"]
        assert hf.shape == ours.shape
        assert np.abs(hf - ours).mean() < 0.01
        cos = (torch_image_embeddings(family, model, hf.astype(np.float32)) * vectors).sum(1)
        assert cos.min() > 0.999, cos


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_tower_matches_transformers(exported, family):
    import torch
    import transformers

    settings = ModelSettings(model_repository=exported["repository"])
    extractor = get_extractor(family, settings)
    weights = exported["weights"][family]
    tokenizer = transformers.AutoTokenizer.from_pretrained(weights)
    text = extractor.manifest.text
    enc = tokenizer(TEXTS, padding=text.padding if text.padding == "max_length" else True, max_length=text.max_length, truncation=True, return_tensors="pt")
    feeds = extractor.tokenize(TEXTS)
    np.testing.assert_array_equal(feeds["input_ids"], enc["input_ids"].numpy())
    vectors = extractor.encode_text(TEXTS)
    assert vectors.shape == (4, extractor.spec.dim) and vectors.dtype == np.float32
    model = reference_model(family, weights)
    kwargs = {"input_ids": enc["input_ids"]}
    if text.attention_mask:
        kwargs["attention_mask"] = enc["attention_mask"]
    with torch.no_grad():
        out = model.get_text_features(**kwargs)
    ref = torch.nn.functional.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(vectors, ref, atol=1e-4)
    # same space: text and image rows have the same width and can be compared by cosine
    assert (vectors @ extractor.encode(images()[:1]).T).shape == (4, 1)


def test_image_only_export_refuses_text(exported):
    extractor = get_extractor("dinov2", ModelSettings(model_repository=exported["repository"]))
    with pytest.raises(TextNotSupportedError, match="'dinov2' cannot embed text"):
        extractor.encode_text(["a photo of a cat"])


def test_custom_name_folder_and_overwrite(exported, tmp_path):
    weights = exported["weights"]["dinov2"]
    report = export_hf("dinov2", weights, tmp_path, name="custom:tiny-dino", description="tiny random DINOv2")
    assert report.model_dir == tmp_path / "tiny-dino"
    specs = available_extractors(ModelSettings(model_repository=tmp_path))
    assert specs["custom:tiny-dino"].description == "tiny random DINOv2"
    with pytest.raises(FileExistsError):
        export_hf("dinov2", weights, tmp_path, name="custom:tiny-dino")
    export_hf("dinov2", weights, tmp_path, name="custom:tiny-dino", overwrite=True, verify=False)
    with pytest.raises(ValueError, match="not clip"):
        export_hf("clip", weights, tmp_path / "x")  # a DINOv2 folder is not CLIP
    with pytest.raises(ValueError, match="custom:<name>"):
        export_hf("dinov2", weights, tmp_path / "y", name="dino")
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_hf("dinov2", tmp_path / "empty", tmp_path / "z")


def test_export_command_line(exported, tmp_path):
    weights = exported["weights"]["siglip"]
    result = subprocess.run(
        [sys.executable, "-m", "lookalike.models.export", "siglip", "--weights", str(weights), "--repository", str(tmp_path), "--name", "custom:cli-siglip"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "extractor 'custom:cli-siglip' (32-d)" in result.stdout and "text tower" in result.stdout
    assert (tmp_path / "cli-siglip" / "lookalike.json").is_file() and (tmp_path / "cli-siglip-text" / "tokenizer.json").is_file()
    assert "custom:cli-siglip" not in EXTRACTORS  # another repository


def test_preprocessing_from_processor_configs(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 384, "width": 384}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    pre = preprocessing_from_hf("siglip", tmp_path, 224)
    assert (pre.size, pre.resize, pre.resample) == ((384, 384), "squash", "bilinear")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224}))
    pre = preprocessing_from_hf("dinov2", tmp_path, 518)
    assert (pre.size, pre.resize, pre.crop_ratio, pre.mean) == ((224, 224), "center_crop", 0.875, (0.485, 0.456, 0.406))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"rescale_factor": 1.0}))
    with pytest.raises(ValueError, match="rescal"):
        preprocessing_from_hf("clip", tmp_path, 224)
