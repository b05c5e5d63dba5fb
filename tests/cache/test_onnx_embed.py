"""The ONNX Runtime embedder is the same model as sentence-transformers on torch: every labelled
text embeds to (nearly) the same vector, so every hit/miss decision of the labelled pairs is the
same; the exported model lives in the cache folder, never in site-packages."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")  # the `semantic` extra (CI installs it)

from gateway.cache import onnx_embed  # noqa: E402
from gateway.cache.semantic import LocalEmbedder, semantic_available  # noqa: E402
from tests.cache.pairs import PAIRS  # noqa: E402

needs_both = pytest.mark.skipif(not (semantic_available() and onnx_embed.onnx_available()),
                                reason="the `semantic` extra (torch and onnxruntime) is not installed")
THRESHOLD = 0.9  # the default of cache.threshold


@pytest.fixture(scope="module")
def embedders() -> tuple[LocalEmbedder, LocalEmbedder]:
    onnx, torch = LocalEmbedder("onnx"), LocalEmbedder("torch")
    onnx.load()
    torch.load()
    return onnx, torch


@needs_both
def test_auto_picks_onnx_when_installed() -> None:
    e = LocalEmbedder()
    e.load()
    assert e.backend == "onnx"
    assert e._model.path.parent == onnx_embed.cache_dir()
    assert "site-packages" not in str(e._model.path)


@needs_both
def test_onnx_and_torch_embeddings_agree_on_the_labelled_texts(embedders) -> None:
    onnx, torch = embedders
    texts = sorted({t for a, b, _ in PAIRS for t in (a, b)}) + ["", "x " * 400]  # empty and truncated too
    one_by_one_o = np.stack([onnx.embed([t])[0] for t in texts])
    batched_o, batched_t = onnx.embed(texts), torch.embed(texts)
    for got in (one_by_one_o, batched_o):
        assert got.shape == (len(texts), 384)
        cos = np.sum(got * batched_t, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(batched_t, axis=1))
        assert cos.min() >= 0.999, [(t, c) for t, c in zip(texts, cos) if c < 0.999]
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@needs_both
def test_onnx_and_torch_take_the_same_hit_decisions(embedders) -> None:
    onnx, torch = embedders
    for cached, asked, _ in PAIRS:
        so = float(onnx.embed([cached])[0] @ onnx.embed([asked])[0])
        st = float(torch.embed([cached])[0] @ torch.embed([asked])[0])
        assert abs(so - st) < 0.002, (cached, asked, so, st)
        assert (so >= THRESHOLD) == (st >= THRESHOLD), (cached, asked, so, st)


@needs_both
def test_export_goes_to_the_configured_cache_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHYARD_CACHE_DIR", str(tmp_path))
    e = LocalEmbedder("onnx")
    e.load()
    assert e._model.path.parent == tmp_path and e._model.path.exists()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    v = e.embed(["How do I reverse a list in Python?"])[0]
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


@needs_both
def test_auto_falls_back_to_torch_when_the_export_cannot_be_written(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SWITCHYARD_CACHE_DIR", str(blocker / "switchyard"))
    e = LocalEmbedder()
    e.load()
    assert e.backend == "torch" and e.onnx_error
    v = e.embed(["How do I reverse a list in Python?"])[0]
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
