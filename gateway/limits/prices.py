"""Per-model prices and context windows: `[prices."alias"]` in the config first, else litellm's bundled
price map (the JSON file from litellm's wheel, see litellm_data.py: litellm is never imported) for the
alias or, for remote APIs, the upstream model name; else zero (a local engine with no configured price).

Resolved once per alias at start (in an executor: the map is a few MB of JSON), so the hot path is a
dict lookup. Costs are integer nano-USD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.limits import litellm_data
from gateway.limits.config import PriceConfig

if TYPE_CHECKING:
    from gateway.routing import ModelRoute


@dataclass(slots=True, frozen=True)
class Price:
    input_nano: float = 0.0  # nano-USD per input token
    output_nano: float = 0.0
    cached_input_nano: float | None = None
    context_window: int | None = None
    source: str = "none"  # "config" | "litellm:<name>" | "none"

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        cached = min(cached_tokens, prompt_tokens) if self.cached_input_nano is not None else 0
        return round(
            (prompt_tokens - cached) * self.input_nano
            + cached * (self.cached_input_nano or 0.0)
            + completion_tokens * self.output_nano
        )


FREE = Price()


def from_config(p: PriceConfig) -> Price:
    per = 1000.0  # USD per million tokens -> nano-USD per token
    return Price(
        p.input_per_mtok * per,
        p.output_per_mtok * per,
        None if p.cached_input_per_mtok is None else p.cached_input_per_mtok * per,
        p.context_window,
        "config",
    )


def from_litellm(name: str, entry: dict[str, Any]) -> Price:
    per = 1e9  # USD per token -> nano-USD per token
    cached = entry.get("cache_read_input_token_cost")
    window = entry.get("max_input_tokens") or entry.get("max_tokens")
    return Price(
        float(entry.get("input_cost_per_token") or 0) * per,
        float(entry.get("output_cost_per_token") or 0) * per,
        None if cached is None else float(cached) * per,
        int(window) if window else None,
        f"litellm:{name}",
    )


def load_price_map() -> dict[str, Any]:
    """litellm's bundled map, or {} when neither its extracted data nor litellm is there (blocking:
    call in an executor)."""
    path = litellm_data.price_map_file()
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve(
    routes: list["ModelRoute"], configured: dict[str, PriceConfig], price_map: dict[str, Any]
) -> dict[str, Price]:
    out: dict[str, Price] = {}
    for route in routes:
        if route.alias in configured:
            out[route.alias] = from_config(configured[route.alias])
            continue
        names = [route.alias] + [d.upstream_model for d in route.deployments if not d.backend.local]
        entry = next(((n, price_map[n]) for n in names if isinstance(price_map.get(n), dict)), None)
        out[route.alias] = from_litellm(*entry) if entry else FREE
    return out
