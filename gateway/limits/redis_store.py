"""The Redis store: checks and settles go through ONE Lua script (atomic, one round trip).

Round trips are the cost, so the store batches: every admission and settle queued during the same
event-loop turn goes in one script call (each admission still all-or-nothing, in order). Under load a
single EVALSHA carries many requests; at one connection a request costs one round trip before it is
sent upstream (its settle goes after the response, off the request's path).

Keys are built by the caller (rules.py: prefix, Redis Cluster hash tag, scope, name) and expire:
buckets once they would be full again (+60 s), concurrency counters after `COUNTER_TTL_S` without
traffic (a crashed process cannot hold slots forever), budget records at the end of their period
(+ a grace week). The clock is Redis's own (TIME), so every gateway process shares it. The script
goes by SHA (EVALSHA; redis-py loads it again after a SCRIPT FLUSH or a Redis restart).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from gateway.limits.store import Admission, BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, Spend

COUNTER_TTL_S = 600

SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ki, ai = 1, 2

local function arg() local v = ARGV[ai]; ai = ai + 1; return v end
local function num() local v = tonumber(ARGV[ai]); ai = ai + 1; return v end
local function key() local k = KEYS[ki]; ki = ki + 1; return k end

local function level_of(k, rate, cap)
  local st = redis.call('GET', k)
  if not st then return cap end
  local l, at = string.match(st, '^(%S+) (%S+)$')
  return math.min(cap, tonumber(l) + math.max(0, now - tonumber(at)) * rate)
end

local function put(k, level, rate, cap)
  redis.call('SET', k, tostring(level) .. ' ' .. tostring(now), 'PX', math.ceil(((cap - level) / rate + 60) * 1000))
end

local function admit()
  local nb, nc, ng = num(), num(), num()
  local bk, bp, levels = {}, {}, {}
  local fail, wait = '', 0
  for i = 1, nb do
    local k, rate, cap, cost = key(), num(), num(), num()
    local level = level_of(k, rate, cap)
    bk[i], bp[i], levels[i] = k, {rate, cap, cost}, level
    local need = math.min(cost, cap)
    if fail == '' and level < need then fail = 'bucket:' .. (i - 1); wait = (need - level) / rate end
  end
  local ck = {}
  for i = 1, nc do
    local k, limit = key(), num()
    ck[i] = k
    if fail == '' and tonumber(redis.call('GET', k) or '0') >= limit then fail = 'counter:' .. (i - 1); wait = 1 end
  end
  local gk, gp = {}, {}
  for i = 1, ng do
    local k, hard, amount, ttl = key(), num(), num(), num()
    gk[i], gp[i] = k, {amount, ttl}
    if fail == '' and hard >= 0 then
      local s = redis.call('HMGET', k, 'spent', 'reserved')
      if tonumber(s[1] or '0') + tonumber(s[2] or '0') + amount > hard then fail = 'budget:' .. (i - 1) end
    end
  end
  local out = {fail, tostring(wait)}
  if fail ~= '' then
    for i = 1, nb do out[#out + 1] = tostring(levels[i]) end
    return out
  end
  for i = 1, nb do
    local p = bp[i]
    local left = levels[i] - p[3]
    put(bk[i], left, p[1], p[2])
    out[#out + 1] = tostring(left)
  end
  for i = 1, nc do
    redis.call('INCR', ck[i])
    redis.call('EXPIRE', ck[i], __COUNTER_TTL__)
  end
  for i = 1, ng do  -- the TTL is set by the settle (which always follows)
    if gp[i][1] ~= 0 then redis.call('HINCRBY', gk[i], 'reserved', gp[i][1]) end
  end
  return out
end

local function settle()
  local nb, nc, ng = num(), num(), num()
  for i = 1, nb do
    local k, rate, cap, delta = key(), num(), num(), num()
    if delta ~= 0 then put(k, math.min(cap, level_of(k, rate, cap) + delta), rate, cap) end
  end
  for i = 1, nc do
    local k = key()
    if redis.call('DECR', k) < 0 then redis.call('SET', k, 0) end
  end
  local out = {}
  for i = 1, ng do
    local k = key()
    local reserved, actual, model, pt, ct, ttl = num(), num(), arg(), num(), num(), num()
    if reserved ~= 0 and redis.call('HINCRBY', k, 'reserved', 0 - reserved) < 0 then redis.call('HSET', k, 'reserved', 0) end
    out[i] = redis.call('HINCRBY', k, 'spent', actual)
    redis.call('HINCRBY', k, 'u:' .. model, actual)
    redis.call('HINCRBY', k, 'p:' .. model, pt)
    redis.call('HINCRBY', k, 'c:' .. model, ct)
    redis.call('HINCRBY', k, 'r:' .. model, 1)
    if ttl > 0 then redis.call('EXPIRE', k, ttl) end
  end
  return out
end

local results = {}
for op = 1, tonumber(ARGV[1]) do
  if arg() == 'a' then results[op] = admit() else results[op] = settle() end
end
return results
""".replace("__COUNTER_TTL__", str(COUNTER_TTL_S))

_FIELDS = {"u": "usd_nano", "p": "prompt_tokens", "c": "completion_tokens", "r": "requests"}


class RedisStore:
    """Raises redis errors as they come (to every request of a failed batch); the fail-open/closed
    policy lives in failover.py."""

    def __init__(self, redis: Redis, settle_delay_s: float = 0.0) -> None:
        self.redis = redis
        self._script = redis.register_script(SCRIPT)
        self.settle_delay_s = settle_delay_s
        self._ops: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _submit(self, keys: list[str], args: list[Any], settle: bool = False) -> asyncio.Future[Any]:
        """Queue one operation; everything queued during this event-loop turn goes in one call.
        A settle may instead wait up to `settle_delay_s` to ride along with the next admission."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._ops.append((keys, args, fut))
        if self._flush_scheduled:
            return fut
        if settle and self.settle_delay_s > 0:
            if self._timer is None:
                self._timer = loop.call_later(self.settle_delay_s, self._flush)
        else:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ops, self._ops = self._ops, []
        if ops:
            task = asyncio.get_running_loop().create_task(self._send(ops))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, ops: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        keys: list[str] = []
        args: list[Any] = [len(ops)]
        for k, a, _ in ops:
            keys += k
            args += a
        try:
            results = await self._script(keys=keys, args=args)
        except BaseException as e:  # every waiter sees the failure (fail policy decides)
            for _, _, fut in ops:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else ConnectionError("cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        for (_, _, fut), res in zip(ops, results):
            if not fut.done():
                fut.set_result(res)

    async def admit(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                    budgets: list[BudgetCheck]) -> Admission:
        keys = [b.key for b in buckets] + [c.key for c in counters] + [g.key for g in budgets]
        args: list[Any] = ["a", len(buckets), len(counters), len(budgets)]
        for b in buckets:
            args += (b.rate, b.capacity, b.cost)
        for c in counters:
            args.append(c.limit)
        for g in budgets:
            args += (-1 if g.hard is None else g.hard, g.amount, g.ttl_s or 0)
        res = await self._submit(keys, args)
        failed = _s(res[0])
        levels = [float(x) for x in res[2:]]
        resets = [max(0.0, b.capacity - lv) / b.rate for b, lv in zip(buckets, levels)]
        return Admission(failed == "", failed, float(res[1]), levels, resets, self)

    async def settle(self, buckets: list[tuple[BucketCheck, float]], counters: list[str],
                     budgets: list[BudgetSettle]) -> list[int]:
        keys = [b.key for b, _ in buckets] + list(counters) + [g.key for g in budgets]
        args: list[Any] = ["s", len(buckets), len(counters), len(budgets)]
        for b, delta in buckets:
            args += (b.rate, b.capacity, delta)
        for g in budgets:
            args += (g.reserved, g.actual, g.model, g.prompt_tokens, g.completion_tokens, g.ttl_s or 0)
        return [int(x) for x in await self._submit(keys, args, settle=True)]

    async def spend(self, key: str) -> Spend:
        raw = {_s(k): int(v) for k, v in (await self.redis.hgetall(key)).items()}
        s = Spend(raw.pop("spent", 0), raw.pop("reserved", 0))
        for name, value in raw.items():
            kind, _, model = name.partition(":")
            if kind in _FIELDS and model:
                s.by_model.setdefault(model, dict.fromkeys(_FIELDS.values(), 0))[_FIELDS[kind]] = value
        return s

    async def close(self) -> None:
        if self._ops:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
