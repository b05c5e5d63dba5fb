"""The one place a limits store is built: in memory, or the Redis script behind the fail policy
(`limits.fail_policy`: open = a local MemoryStore while Redis is down, closed = refuse).

A hot reload builds a new Gateway beside the old one; the in-memory state (buckets, slots, spend,
reservations of requests still running on the old gateway) and, with Redis, the fail-open journal
of what Redis has yet to be told are handed over (`StoreState`), so a reload neither forgets spend
nor frees reservations. They go over only when the new config keeps the same Redis (url and key
prefix) or the same absence of it, and the same SQLite ledger path; otherwise the new gateway
starts fresh (logged: `limits_state_not_handed_over`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.limits.store import MemoryStore, Store

if TYPE_CHECKING:
    from gateway.limits.failover import Journal
    from gateway.runtime import Gateway


@dataclass
class StoreState:
    """What a reload hands from the old gateway's limits store to the new one."""

    memory: MemoryStore  # the store itself without Redis, the fail-open fallback with it
    journal: "Journal | None"  # Redis: what the fallback has yet to replay
    redis_id: tuple[str, str] | None  # (url, key prefix), None = no Redis
    ledger_path: str | None  # the SQLite ledger writing `memory`'s spend (no Redis, [budgets])


def ledger_path(gw: "Gateway") -> str | None:
    cfg = gw.config
    return cfg.budgets.sqlite_path if gw.redis is None and cfg.budgets is not None else None


def previous_state(gw: "Gateway", previous: "Gateway | None") -> StoreState | None:
    """The old gateway's state, when the new config can take it over."""
    if previous is None:
        return None
    part: Any = previous.limits if previous.limits is not None else previous.quotas
    state: StoreState | None = getattr(part, "state", None)
    if state is None:
        return None
    cfg = gw.config
    redis_id = (cfg.redis.url, cfg.redis.key_prefix) if cfg.redis is not None else None
    if state.redis_id != redis_id or (redis_id is None and state.ledger_path != ledger_path(gw)):
        gw.log.warning(
            "limits_state_not_handed_over",
            detail="the new config changes [redis] or budgets.sqlite_path: limits state starts afresh",
        )
        return None
    return state


def build_store(gw: "Gateway", scope: str, previous: StoreState | None = None) -> tuple[Store, StoreState]:
    """(the store to use, its state for the next reload). `scope` names the user in the fault log
    line; `previous`: what the old gateway hands over (previous_state)."""
    cfg = gw.config
    memory = previous.memory if previous is not None else MemoryStore()
    if gw.redis is None or cfg.redis is None:
        return memory, StoreState(memory, None, None, ledger_path(gw))
    from gateway.limits.failover import FailoverStore, Journal
    from gateway.limits.redis_store import RedisStore

    policy = cfg.limits.fail_policy if cfg.limits else "open"
    retry = cfg.limits.retry_redis_after_s if cfg.limits else 1.0
    delay = cfg.limits.settle_delay_s if cfg.limits else 0.0
    journal = previous.journal if previous is not None and previous.journal is not None else Journal()
    store = FailoverStore(
        RedisStore(gw.redis, delay), memory, policy == "open", retry, _on_fault(gw, scope), journal=journal
    )
    return store, StoreState(memory, journal, (cfg.redis.url, cfg.redis.key_prefix), None)


def _on_fault(gw: "Gateway", scope: str) -> Callable[[str, BaseException], None]:
    def fault(op: str, e: BaseException) -> None:
        gw.metrics.count(gw.metrics.limits_store_errors, op)
        policy = gw.config.limits.fail_policy if gw.config.limits else "open"
        gw.log.warning("limits_store_unreachable", op=op, error=type(e).__name__, scope=scope, fail_policy=policy)

    return fault
