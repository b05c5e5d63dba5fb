"""docs/metrics.md and the metrics a running gateway exports agree, name by name and type by type."""

from __future__ import annotations

import aiohttp

from tests.conftest import gateway_config, sdk
from tests.ops.catalogue import catalogue, exported


async def test_every_exported_metric_is_documented_and_every_documented_one_exported(gateway_factory, engines) -> None:
    raw = gateway_config(engines)
    raw["cache"] = {}  # the cache metrics exist only where a cache is configured: turn every feature on
    gateway = await gateway_factory(raw)
    await sdk(gateway).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.base + "/metrics") as r:
            assert r.status == 200
            live = exported(await r.text())
    documented = catalogue()
    assert len(documented) >= 10, "docs/metrics.md: the catalogue table was not found"
    undocumented = sorted(set(live) - set(documented))
    assert not undocumented, f"exported but missing from docs/metrics.md: {', '.join(undocumented)}"
    not_exported = sorted(set(documented) - set(live))
    assert not not_exported, f"in docs/metrics.md but not exported by the gateway: {', '.join(not_exported)}"
    wrong_type = sorted(f"{n} (docs: {documented[n]}, exported: {t})" for n, t in live.items() if documented[n] != t)
    assert not wrong_type, f"wrong type in docs/metrics.md: {', '.join(wrong_type)}"
