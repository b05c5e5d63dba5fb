"""litellm's data without litellm: the core install extracts the tiktoken encodings and the price map
from litellm's wheel (gateway/limits/litellm_data.py); estimates and prices then work with litellm
not importable at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from gateway.limits import litellm_data

BPE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # cl100k_base's name in tiktoken's cache


def fake_wheel(path: Path, *, with_map: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"litellm/litellm_core_utils/tokenizers/{BPE}", "bpe")
        zf.writestr("litellm/litellm_core_utils/tokenizers/__init__.py", "")
        zf.writestr("litellm/litellm_core_utils/tokenizers/anthropic_tokenizer.json", "{}")
        zf.writestr("litellm/main.py", "")
        if with_map:
            zf.writestr(f"litellm/{litellm_data.PRICE_MAP_FILE}", '{"m": {"input_cost_per_token": 1e-6}}')
    return path


def test_extract_takes_only_the_encodings_and_the_price_map(tmp_path: Path) -> None:
    dest = tmp_path / "data" / "litellm-x"
    assert litellm_data.fetch(dest, fake_wheel(tmp_path / "litellm.whl")) == dest
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        litellm_data.PRICE_MAP_FILE,
        f"tokenizers/{BPE}",
    ]
    assert [p.name for p in dest.parent.iterdir()] == ["litellm-x"]  # no staging folder left
    # already there: nothing to do, not even a wheel to read
    assert litellm_data.fetch(dest, tmp_path / "no-such.whl") == dest


def test_an_incomplete_wheel_leaves_no_folder(tmp_path: Path) -> None:
    dest = tmp_path / "litellm-x"
    with pytest.raises(ValueError):
        litellm_data.extract(fake_wheel(tmp_path / "litellm.whl", with_map=False), dest)
    assert list(tmp_path.iterdir()) == [tmp_path / "litellm.whl"]


def test_the_extracted_folder_comes_before_an_installed_litellm(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHYARD_CACHE_DIR", str(tmp_path))
    litellm_data.fetch(wheel=fake_wheel(tmp_path / "litellm.whl"))
    assert litellm_data.tokenizers_dir() == tmp_path / "data" / f"litellm-{litellm_data.LITELLM_VERSION}" / "tokenizers"
    assert litellm_data.price_map_file() == litellm_data.data_dir() / litellm_data.PRICE_MAP_FILE


# Run in a child process where `import litellm` fails as if it were not installed.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    class NoLitellm(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "litellm" or name.startswith("litellm."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, NoLitellm())
    try:
        import litellm  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("litellm is still importable")

    from gateway.limits import estimate, litellm_data, prices

    counters = estimate.load_counters({"cl100k_base", "o200k_base"})
    price_map = prices.load_price_map()
    entry = price_map["gpt-4o-mini"]
    print(json.dumps({
        "encodings": sorted(counters),
        "cl100k": counters["cl100k_base"]("Hello world"),
        "o200k": counters["o200k_base"]("Hello world"),
        "tiktoken_dir": os.environ["TIKTOKEN_CACHE_DIR"],
        "models": len(price_map),
        "price": prices.from_litellm("gpt-4o-mini", entry).input_nano,
        "litellm_loaded": any(m == "litellm" or m.startswith("litellm.") for m in sys.modules),
    }))
    """
)


def test_estimates_and_prices_come_from_the_extracted_data_without_litellm(tmp_path: Path) -> None:
    tok, price_map = litellm_data.tokenizers_dir(), litellm_data.price_map_file()
    if tok is None or price_map is None:
        pytest.skip("no litellm data here (python -m gateway.limits.litellm_data, or the `providers` extra)")
    dest = tmp_path / "data" / f"litellm-{litellm_data.LITELLM_VERSION}"
    shutil.copytree(tok, dest / "tokenizers", ignore=shutil.ignore_patterns("*.py", "*.json", "__pycache__"))
    shutil.copy(price_map, dest / litellm_data.PRICE_MAP_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "XDG_CACHE_HOME")}
    env["SWITCHYARD_CACHE_DIR"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["encodings"] == ["cl100k_base", "o200k_base"]
    assert got["cl100k"] == 2 and got["o200k"] == 2  # real BPE counts; 4 bytes per token would say 3
    assert got["tiktoken_dir"] == str(dest / "tokenizers")
    assert got["models"] > 1000
    assert got["price"] == pytest.approx(150.0)  # gpt-4o-mini: $0.15 per million input tokens
    assert not got["litellm_loaded"]
