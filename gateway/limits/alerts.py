"""Soft budget alerts: a metric, a warning log line and, when the rule has `webhook_url`, one JSON POST
(in the background, 5 s timeout, failures logged, never retried). Raised once per crossing: by the
settle whose spend passed the soft limit (atomic in the store, so one process across replicas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from gateway.runtime import Gateway

WEBHOOK_TIMEOUT_S = 5.0


class Alerts:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self._session: aiohttp.ClientSession | None = None

    def soft_limit(self, spec: Any, team: str, spent_usd: float) -> None:
        rule = spec.rule
        m = self.gw.metrics
        m.count(m.budget_soft_alerts, team)
        event = {
            "event": "budget_soft_limit",
            "scope": spec.scope,
            "name": spec.name,
            "period": rule.period,
            "soft_usd": rule.soft_usd,
            "hard_usd": rule.hard_usd,
            "spent_usd": round(spent_usd, 6),
        }
        self.gw.log.warning("budget_soft_limit", **{k: v for k, v in event.items() if k != "event"})
        if rule.webhook_url:
            self.gw.spawn(self._post(rule.webhook_url, event))

    async def _post(self, url: str, event: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        try:
            async with self._session.post(url, json=event) as resp:
                if resp.status >= 300:
                    self.gw.log.warning("budget_webhook_failed", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            self.gw.log.warning("budget_webhook_failed", error=type(e).__name__)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
