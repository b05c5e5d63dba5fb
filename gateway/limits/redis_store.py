"""The Redis store: every check is ONE Lua script call (atomic, one round trip), every settle one more.

Keys are built by the caller (phase.py: prefix, Redis Cluster hash tag, scope, name) and expire:
buckets once they would be full again (+60 s), concurrency counters after `COUNTER_TTL_S` without
traffic (a crashed process cannot hold slots forever), budget records at the end of their period
(+ a grace week). The clock is Redis's own (TIME), so every gateway process shares it. Scripts go
by SHA (EVALSHA; redis-py loads them again after a SCRIPT FLUSH or a restart).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.limits.store import Admission, BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, Spend

COUNTER_TTL_S = 600

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

ADMIT = _CLOCK + """
local nb, nc, ng = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
local levels, params = {}, {}
local fail, wait = '', 0
for i = 1, nb do
  local rate, cap, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local st = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = cap
  if st[1] then level = math.min(cap, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate) end
  levels[i] = level
  params[i] = {rate, cap, cost}
  local need = math.min(cost, cap)
  if fail == '' and level < need then fail = 'bucket:' .. (i - 1); wait = (need - level) / rate end
end
local climits = {}
for i = 1, nc do
  climits[i] = tonumber(ARGV[a]); a = a + 1
  if fail == '' and tonumber(redis.call('GET', KEYS[nb + i]) or '0') >= climits[i] then
    fail = 'counter:' .. (i - 1); wait = 1
  end
end
local gparams = {}
for i = 1, ng do
  local hard, amount, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  gparams[i] = {amount, ttl}
  if fail == '' and hard >= 0 then
    local s = redis.call('HMGET', KEYS[nb + nc + i], 'spent', 'reserved')
    if tonumber(s[1] or '0') + tonumber(s[2] or '0') + amount > hard then fail = 'budget:' .. (i - 1) end
  end
end
local out = {fail, tostring(wait)}
if fail ~= '' then
  for i = 1, nb do out[#out + 1] = tostring(levels[i]) end
  return out
end
for i = 1, nb do
  local p = params[i]
  local left = levels[i] - p[3]
  redis.call('HSET', KEYS[i], 'l', tostring(left), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(((p[2] - left) / p[1] + 60) * 1000))
  out[#out + 1] = tostring(left)
end
for i = 1, nc do
  redis.call('INCR', KEYS[nb + i])
  redis.call('EXPIRE', KEYS[nb + i], tonumber(ARGV[a]))
end
for i = 1, ng do
  local k = KEYS[nb + nc + i]
  redis.call('HINCRBY', k, 'reserved', gparams[i][1])
  if gparams[i][2] > 0 then redis.call('EXPIRE', k, gparams[i][2]) end
end
return out
"""

SETTLE = _CLOCK + """
local nb, nc, ng = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
for i = 1, nb do
  local rate, cap, delta = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local st = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = cap
  if st[1] then level = math.min(cap, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate) end
  level = math.min(cap, level + delta)
  redis.call('HSET', KEYS[i], 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(((cap - level) / rate + 60) * 1000))
end
for i = 1, nc do
  if redis.call('DECR', KEYS[nb + i]) < 0 then redis.call('SET', KEYS[nb + i], 0) end
end
local out = {}
for i = 1, ng do
  local k = KEYS[nb + nc + i]
  local reserved, actual, model = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  local pt, ct, ttl = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  if redis.call('HINCRBY', k, 'reserved', -reserved) < 0 then redis.call('HSET', k, 'reserved', 0) end
  out[i] = redis.call('HINCRBY', k, 'spent', actual)
  redis.call('HINCRBY', k, 'u:' .. model, actual)
  redis.call('HINCRBY', k, 'p:' .. model, pt)
  redis.call('HINCRBY', k, 'c:' .. model, ct)
  redis.call('HINCRBY', k, 'r:' .. model, 1)
  if ttl > 0 then redis.call('EXPIRE', k, ttl) end
end
return out
"""

_FIELDS = {"u": "usd_nano", "p": "prompt_tokens", "c": "completion_tokens", "r": "requests"}


class RedisStore:
    """Raises redis errors as they come; the fail-open/closed policy lives in failover.py."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)

    async def admit(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                    budgets: list[BudgetCheck]) -> Admission:
        keys = [b.key for b in buckets] + [c.key for c in counters] + [g.key for g in budgets]
        args: list[Any] = [len(buckets), len(counters), len(budgets)]
        for b in buckets:
            args += (b.rate, b.capacity, b.cost)
        args += [c.limit for c in counters]
        for g in budgets:
            args += (-1 if g.hard is None else g.hard, g.amount, g.ttl_s or 0)
        if counters:
            args.append(COUNTER_TTL_S)
        res = await self._admit(keys=keys, args=args)
        failed = _s(res[0])
        levels = [float(x) for x in res[2:]]
        resets = [max(0.0, b.capacity - lv) / b.rate for b, lv in zip(buckets, levels)]
        return Admission(failed == "", failed, float(res[1]), levels, resets, self)

    async def settle(self, buckets: list[tuple[BucketCheck, float]], counters: list[str],
                     budgets: list[BudgetSettle]) -> list[int]:
        keys = [b.key for b, _ in buckets] + list(counters) + [g.key for g in budgets]
        args: list[Any] = [len(buckets), len(counters), len(budgets)]
        for b, delta in buckets:
            args += (b.rate, b.capacity, delta)
        for g in budgets:
            args += (g.reserved, g.actual, g.model, g.prompt_tokens, g.completion_tokens, g.ttl_s or 0)
        return [int(x) for x in await self._settle(keys=keys, args=args)]

    async def spend(self, key: str) -> Spend:
        raw = {_s(k): int(v) for k, v in (await self.redis.hgetall(key)).items()}
        s = Spend(raw.pop("spent", 0), raw.pop("reserved", 0))
        for name, value in raw.items():
            kind, _, model = name.partition(":")
            if kind in _FIELDS and model:
                s.by_model.setdefault(model, dict.fromkeys(_FIELDS.values(), 0))[_FIELDS[kind]] = value
        return s

    async def close(self) -> None:
        return None  # the Redis client belongs to the Gateway


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
