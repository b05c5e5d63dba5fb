"""The ONNX Runtime embedder is the same model as sentence-transformers on torch: every labelled
text embeds to (nearly) the same vector, so every hit/miss decision of the labelled pairs is the
same; the exported model lives in the cache folder, never in site-packages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")  # the `semantic` extra (CI installs it)

from gateway.cache import onnx_embed  # noqa: E402
from gateway.cache.semantic import LocalEmbedder, semantic_available  # noqa: E402
from tests.cache.pairs import PAIRS  # noqa: E402

needs_both = pytest.mark.skipif(
    not (semantic_available() and onnx_embed.onnx_available()),
    reason="the `semantic` extra (torch and onnxruntime) is not installed",
)
THRESHOLD = 0.9  # the default of cache.threshold


@pytest.fixture(scope="module")
def embedders() -> tuple[LocalEmbedder, LocalEmbedder]:
    onnx, torch = LocalEmbedder("onnx"), LocalEmbedder("torch")
    onnx.load()
    torch.load()
    return onnx, torch


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
def test_auto_picks_onnx_when_installed() -> None:
    e = LocalEmbedder()
    e.load()
    assert e.backend == "onnx"
    assert e._model.path.parent == onnx_embed.cache_dir()
    assert "site-packages" not in str(e._model.path)


LABELLED = sorted({t for a, b, _ in PAIRS for t in (a, b)})


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
@pytest.mark.parametrize(
    "texts",
    [
        pytest.param(LABELLED, id="labelled"),
        # empty, truncated at 256 tokens, and short texts padded to 256 in the same batch (kept small:
        # a batch costs its size x its longest text)
        pytest.param(["", "x " * 400, *LABELLED[:2]], id="empty-truncated-padded"),
    ],
)
def test_onnx_and_torch_embeddings_agree(embedders, texts: list[str]) -> None:
    onnx, torch = embedders
    one_by_one_o = np.stack([onnx.embed([t])[0] for t in texts])
    batched_o, batched_t = onnx.embed(texts), torch.embed(texts)
    for got in (one_by_one_o, batched_o):
        assert got.shape == (len(texts), 384)
        cos = np.sum(got * batched_t, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(batched_t, axis=1))
        assert cos.min() >= 0.999, [(t, c) for t, c in zip(texts, cos) if c < 0.999]
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
def test_onnx_and_torch_take_the_same_hit_decisions(embedders) -> None:
    onnx, torch = embedders
    # one batch per backend (batched == one by one is the test above)
    vo = dict(zip(LABELLED, onnx.embed(LABELLED)))
    vt = dict(zip(LABELLED, torch.embed(LABELLED)))
    for cached, asked, _ in PAIRS:
        so, st = float(vo[cached] @ vo[asked]), float(vt[cached] @ vt[asked])
        assert abs(so - st) < 0.002, (cached, asked, so, st)
        assert (so >= THRESHOLD) == (st >= THRESHOLD), (cached, asked, so, st)


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
def test_export_goes_to_the_configured_cache_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHYARD_CACHE_DIR", str(tmp_path))
    e = LocalEmbedder("onnx")
    e.load()
    assert e._model.path.parent == tmp_path and e._model.path.exists()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    v = e.embed(["How do I reverse a list in Python?"])[0]
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
def test_auto_falls_back_to_torch_when_the_export_cannot_be_written(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SWITCHYARD_CACHE_DIR", str(blocker / "switchyard"))
    e = LocalEmbedder()
    e.load()
    assert e.backend == "torch" and e.onnx_error
    v = e.embed(["How do I reverse a list in Python?"])[0]
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


# A child process where torch, transformers and sentence-transformers cannot be imported.
NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = ("torch", "transformers", "sentence_transformers")

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    from gateway.cache.semantic import LocalEmbedder, semantic_available

    e = LocalEmbedder()
    e.load()
    v = e.embed(["How do I reverse a list in Python?"])[0]
    print(json.dumps({
        "available": semantic_available(),
        "backend": e.backend,
        "dim": len(v),
        "norm": float((v * v).sum()) ** 0.5,
        "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED)),
    }))
    """
)


@needs_both
@pytest.mark.slow  # torch and both models load (or an export runs): ~10 s once
def test_an_exported_model_loads_and_embeds_without_torch(embedders) -> None:
    onnx, _ = embedders  # exported by now, in the default cache folder the child uses too
    assert onnx._model.path.exists()
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["available"] and got["backend"] == "onnx" and got["dim"] == 384
    assert abs(got["norm"] - 1) < 1e-4
    assert got["loaded"] == []


def test_processes_starting_together_export_once(tmp_path, monkeypatch) -> None:
    calls = []

    def slow_export(model_dir: Path, dest: Path) -> None:
        calls.append(dest)
        time.sleep(0.2)
        dest.write_bytes(b"onnx")

    monkeypatch.setattr(onnx_embed, "export", slow_export)
    dest = tmp_path / "model.onnx"
    threads = [threading.Thread(target=onnx_embed.export_once, args=(tmp_path, dest)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [dest] and dest.read_bytes() == b"onnx"  # flock: each open() is its own lock holder
