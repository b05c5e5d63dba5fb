"""The one folder outside site-packages where Switchyard keeps files it derives once and reuses: the
ONNX export of the embedding model (gateway/cache/onnx_embed.py) and the data files taken from
litellm's wheel (gateway/limits/litellm_data.py). `$SWITCHYARD_CACHE_DIR`, else
`$XDG_CACHE_HOME/switchyard`, else `~/.cache/switchyard`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("SWITCHYARD_CACHE_DIR"):
        return Path(os.environ["SWITCHYARD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "switchyard"
