"""litellm's offline data without litellm: tiktoken's BPE files and the model price map.

The token estimate (estimate.py) and the prices (prices.py) need two things litellm ships inside its
wheel: the tiktoken encodings (`litellm/litellm_core_utils/tokenizers/`, files named as tiktoken's
cache names them) and `model_prices_and_context_window_backup.json`. Installing litellm for them
costs ~170 MB and its dependencies, so `python -m gateway.limits.litellm_data` (run by the Makefile's
core install) downloads the one wheel (`pip download --no-deps`, seconds) and extracts just those
files into `<cache_dir>/data/litellm-<version>/` (gateway/paths.py), all or nothing.

Lookup order: that folder, then an installed litellm package (found without importing it), else
None (token estimates fall back to 4 bytes per token, prices to the config).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gateway.paths import cache_dir

LITELLM_VERSION = "1.106.2"  # the same pin as the `providers` extra
PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
TOKENIZERS = "tokenizers"  # folder name in the data dir
_WHEEL_TOKENIZERS = "litellm/litellm_core_utils/tokenizers/"
_WHEEL_PRICE_MAP = f"litellm/{PRICE_MAP_FILE}"
_BPE_NAME = re.compile(r"[0-9a-f]{40}")  # tiktoken's cache file names: sha1 of the blob URL


def data_dir() -> Path:
    return cache_dir() / "data" / f"litellm-{LITELLM_VERSION}"


def _complete(folder: Path) -> bool:
    tok = folder / TOKENIZERS
    return (folder / PRICE_MAP_FILE).is_file() and tok.is_dir() and any(tok.iterdir())


def _installed_litellm() -> Path | None:
    """The installed litellm package's folder, without importing it (2-3 s)."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def tokenizers_dir() -> Path | None:
    """A folder for TIKTOKEN_CACHE_DIR holding the bundled encodings, or None."""
    if _complete(data_dir()):
        return data_dir() / TOKENIZERS
    pkg = _installed_litellm()
    if pkg is not None and (pkg / "litellm_core_utils" / "tokenizers").is_dir():
        return pkg / "litellm_core_utils" / "tokenizers"
    return None


def price_map_file() -> Path | None:
    if _complete(data_dir()):
        return data_dir() / PRICE_MAP_FILE
    pkg = _installed_litellm()
    if pkg is not None and (pkg / PRICE_MAP_FILE).is_file():
        return pkg / PRICE_MAP_FILE
    return None


def extract(wheel: Path, dest: Path) -> Path:
    """Take the encodings and the price map out of a litellm wheel into `dest` (atomic rename: a
    concurrent run or a crash never leaves a half-filled folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users of a shared cache
        (staging / TOKENIZERS).mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name == _WHEEL_PRICE_MAP:
                    target = staging / PRICE_MAP_FILE
                elif name.startswith(_WHEEL_TOKENIZERS) and _BPE_NAME.fullmatch(name[len(_WHEEL_TOKENIZERS) :]):
                    target = staging / TOKENIZERS / name[len(_WHEEL_TOKENIZERS) :]
                else:
                    continue
                with zf.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not _complete(staging):
            raise ValueError(f"{wheel}: no price map or no tokenizer files in it")
        try:
            os.rename(staging, dest)
        except OSError:  # another process got there first (or a stale folder): keep a complete one
            if not _complete(dest):
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Download litellm's wheel (no dependencies, not installed) unless `wheel` is given, and extract
    the data into `dest` (default data_dir()). Nothing to do when it is there already."""
    dest = dest or data_dir()
    if _complete(dest):
        return dest
    if wheel is not None:
        return extract(wheel, dest)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"litellm=={LITELLM_VERSION}", "-d", tmp]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        found = sorted(Path(tmp).glob("litellm-*.whl"))
        if not found:
            raise FileNotFoundError(f"pip download left no litellm wheel in {tmp}")
        return extract(found[0], dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.limits.litellm_data", description=__doc__.split("\n")[0])
    p.add_argument("--wheel", type=Path, help="extract from this litellm wheel instead of downloading it")
    p.add_argument("--dest", type=Path, help=f"target folder (default: {data_dir()})")
    args = p.parse_args(argv)
    try:
        path = fetch(args.dest, args.wheel)
    except (OSError, ValueError, subprocess.CalledProcessError, zipfile.BadZipFile) as e:
        print(f"litellm data: not fetched ({e}); token estimates fall back to 4 bytes per token", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
