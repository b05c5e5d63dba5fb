"""Which buckets, counters and budgets apply to a request, and the store keys they live under.

Resolved once per (key, team, model) and cached, so the hot path does a dict lookup. Redis keys are
`<prefix>{<tag>}:<kind>:<scope>:<name>[:<period>]` where the Redis Cluster hash tag is the team
(`{t:<team>}`) for key and team scopes and budgets, so one request's keys share a slot; model-scope
buckets are tagged `{m:<model>}` (on a Cluster those rules would need their own slot: not supported).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.limits.config import BudgetRule, BudgetsConfig, LimitRule, LimitsConfig


@dataclass(slots=True, frozen=True)
class BucketSpec:
    key: str
    kind: str  # "requests" | "tokens"
    scope: str
    name: str
    rate: float  # per second
    capacity: float


@dataclass(slots=True, frozen=True)
class CounterSpec:
    key: str
    scope: str
    name: str
    limit: int


@dataclass(slots=True, frozen=True)
class BudgetSpec:
    key_base: str  # + ":<period id>"
    scope: str
    name: str
    rule: BudgetRule | None  # None: tracked (usage report), never refused


@dataclass(slots=True, frozen=True)
class Plan:
    buckets: tuple[BucketSpec, ...]
    counters: tuple[CounterSpec, ...]
    budgets: tuple[BudgetSpec, ...]


def _match(rules: list, scope: str, name: str) -> list:
    exact = [r for r in rules if r.scope == scope and r.name == name]
    return exact or [r for r in rules if r.scope == scope and r.name == "*"]


def _tag(scope: str, name: str, team: str) -> str:
    return f"{{m:{name}}}" if scope == "model" else f"{{t:{team}}}"


class Planner:
    def __init__(self, limits: LimitsConfig | None, budgets: BudgetsConfig | None, prefix: str) -> None:
        self.limits = limits.rules if limits else []
        self.budget_rules = budgets.rules if budgets else []
        self.prefix = prefix
        self._cache: dict[tuple[str, str, str], Plan] = {}

    def plan(self, key_name: str, team: str, model: str) -> Plan:
        k = (key_name, team, model)
        plan = self._cache.get(k)
        if plan is None:
            plan = self._cache[k] = self._build(key_name, team, model)
        return plan

    def _build(self, key_name: str, team: str, model: str) -> Plan:
        buckets: list[BucketSpec] = []
        counters: list[CounterSpec] = []
        for scope, name in (("key", key_name), ("team", team), ("model", model)):
            base = f"{self.prefix}{_tag(scope, name, team)}"
            for r in _match(self.limits, scope, name):
                buckets += self._buckets(r, base, scope, name)
                if r.concurrent:
                    counters.append(CounterSpec(f"{base}:slots:{scope}:{name}", scope, name, r.concurrent))
        budgets = []
        for scope, name in (("team", team), ("key", key_name)):
            rules = _match(self.budget_rules, scope, name)
            budgets.append(
                BudgetSpec(f"{self.prefix}{{t:{team}}}:spend:{scope}:{name}", scope, name, rules[0] if rules else None)
            )
        return Plan(tuple(buckets), tuple(counters), tuple(budgets))

    @staticmethod
    def _buckets(r: LimitRule, base: str, scope: str, name: str) -> list[BucketSpec]:
        out = []
        burst = r.burst or 1.0
        for kind, per_minute in (("requests", r.requests_per_minute), ("tokens", r.tokens_per_minute)):
            if per_minute:
                out.append(
                    BucketSpec(
                        f"{base}:{kind[:3]}:{scope}:{name}", kind, scope, name, per_minute / 60.0, per_minute * burst
                    )
                )
        return out

    def budget_base(self, scope: str, name: str, team: str) -> str:
        return f"{self.prefix}{{t:{team}}}:spend:{scope}:{name}"
