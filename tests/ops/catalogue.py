"""The metric catalogue (docs/metrics.md) as data, for the tests that hold code and docs together."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(switchyard_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", re.M)


def catalogue() -> dict[str, str]:
    """name -> type, from the table rows of docs/metrics.md."""
    return dict(ROW.findall((ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")))


def exported(text: str) -> dict[str, str]:
    """name -> type from the `# TYPE` lines of a /metrics page (the `_created` companions left out)."""
    found = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    return {n: t for n, t in found.items() if not (n.endswith("_created") and t == "gauge")}


def base_names(series: str) -> set[str]:
    """The catalogue names a series name can belong to (`x_bucket` -> x, `x_total` stays)."""
    out = {series}
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            out.add(series[: -len(suffix)])
    return out
