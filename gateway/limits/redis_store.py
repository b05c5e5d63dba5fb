"""The Redis store: checks and settles go through ONE Lua script (atomic, one round trip).

Round trips are the cost, so the store batches: every admission and settle queued during the same
event-loop turn goes in one script call (each admission still all-or-nothing, in order). Under load a
single EVALSHA carries many requests; at one connection a request costs one round trip before it is
sent upstream (its settle goes after the response, off the request's path).

Keys are built by the caller (rules.py: prefix, Redis Cluster hash tag, scope, name) and expire:
buckets once they would be full again (+60 s), budget records at the end of their period (+ a grace
week). Reservations belong to their request (the holder, see store.py): a concurrency counter is a
sorted set of holders scored by their deadline; a budget's reservations are its hash's
`h:<holder>` amounts with their deadlines in the sorted set `<budget key>:h`. An admission first
prunes the holders past their deadline (a killed process, a lost settle), so leaked slots and
reservations come back on their own however busy the key stays; a pruned budget holder leaves a
tombstone in `<budget key>:x` (a day) so its late settle still records the spend, once. Spend
replayed after an outage (failover.py) is deduplicated by batch in `<budget key>:d`.
The clock is Redis's own (TIME), so every gateway process shares it. The script goes by SHA
(EVALSHA; redis-py loads it again after a SCRIPT FLUSH or a Redis restart).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from gateway.limits.store import (
    HOLD_S,
    TOMBSTONE_S,
    Admission,
    BucketCheck,
    BudgetCheck,
    BudgetSettle,
    CounterCheck,
    Hold,
    Spend,
    _need_holder,
)

DONE_S = 86400  # a replayed batch is recognised this long

SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ki, ai = 1, 2
local TOMB_S, DONE_S = __TOMB_S__, __DONE_S__

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

local function unreserve(k, amount)
  if amount ~= 0 and redis.call('HINCRBY', k, 'reserved', 0 - amount) < 0 then redis.call('HSET', k, 'reserved', 0) end
end

-- holders of a budget past their deadline: release their reservation, leave a tombstone
local function prune_budget(k)
  local hk = k .. ':h'
  local gone = redis.call('ZRANGEBYSCORE', hk, '-inf', now)
  if #gone == 0 then return end
  local tk = k .. ':x'
  for _, h in ipairs(gone) do
    unreserve(k, tonumber(redis.call('HGET', k, 'h:' .. h) or '0'))
    redis.call('HDEL', k, 'h:' .. h)
    redis.call('ZADD', tk, now + TOMB_S, h)
  end
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
  redis.call('EXPIRE', tk, TOMB_S)
end

local function admit()
  local holder, hold = arg(), num()
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
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)  -- slots past their deadline
    if fail == '' and redis.call('ZCARD', k) >= limit then fail = 'counter:' .. (i - 1); wait = 1 end
  end
  local gk, gp = {}, {}
  for i = 1, ng do
    local k, hard, amount, ttl = key(), num(), num(), num()
    gk[i], gp[i] = k, {amount, ttl}
    prune_budget(k)
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
  local deadline = now + hold
  local hold_ms = math.ceil((hold + TOMB_S) * 1000)
  for i = 1, nc do
    redis.call('ZADD', ck[i], deadline, holder)
    redis.call('PEXPIRE', ck[i], hold_ms)
  end
  for i = 1, ng do
    local k, amount, ttl = gk[i], gp[i][1], gp[i][2]
    redis.call('ZADD', k .. ':h', deadline, holder)
    redis.call('PEXPIRE', k .. ':h', hold_ms)
    if amount ~= 0 then
      redis.call('HSET', k, 'h:' .. holder, amount)
      redis.call('HINCRBY', k, 'reserved', amount)
    end
    if ttl > 0 then redis.call('EXPIRE', k, ttl) end
  end
  return out
end

local function add_spend(k, actual, model, pt, ct, n)
  redis.call('HINCRBY', k, 'spent', actual)
  redis.call('HINCRBY', k, 'u:' .. model, actual)
  redis.call('HINCRBY', k, 'p:' .. model, pt)
  redis.call('HINCRBY', k, 'c:' .. model, ct)
  redis.call('HINCRBY', k, 'r:' .. model, n)
end

local function settle()
  local holder = arg()
  local nb, nc, ng = num(), num(), num()
  local bs = {}
  for i = 1, nb do bs[i] = {key(), num(), num(), num()} end
  for i = 1, nc do redis.call('ZREM', key(), holder) end
  local fresh = true
  local out = {}
  for i = 1, ng do
    local k = key()
    local actual, model, pt, ct, ttl = num(), arg(), num(), num(), num()
    local apply = true
    if holder ~= '' then
      if redis.call('ZREM', k .. ':h', holder) == 1 then
        unreserve(k, tonumber(redis.call('HGET', k, 'h:' .. holder) or '0'))
        redis.call('HDEL', k, 'h:' .. holder)
      elseif redis.call('ZREM', k .. ':x', holder) == 0 then
        apply = false  -- settled before (a replay whose first try reached Redis)
      end
    end
    if i == 1 then fresh = apply end
    if apply and model ~= '' then add_spend(k, actual, model, pt, ct, 1) end
    if ttl > 0 then redis.call('EXPIRE', k, ttl) end
    out[i] = redis.call('HGET', k, 'spent') or '0'
  end
  if fresh then
    for i = 1, nb do
      local b = bs[i]
      if b[4] ~= 0 then put(b[1], math.min(b[3], level_of(b[1], b[2], b[3]) + b[4]), b[2], b[3]) end
    end
  end
  return out
end

local function renew()
  local hold, n = num(), num()
  local hold_ms = math.ceil((hold + TOMB_S) * 1000)
  for i = 1, n do
    local k, holder = key(), arg()
    if redis.call('ZADD', k, 'XX', 'CH', now + hold, holder) == 1 then redis.call('PEXPIRE', k, hold_ms) end
  end
  return {}
end

-- spend settled elsewhere (the fail-open fallback), added once per batch
local function replay()
  local batch, ng = arg(), num()
  local out = {}
  for i = 1, ng do
    local k = key()
    local actual, model, pt, ct, n, ttl = num(), arg(), num(), num(), num(), num()
    local dk = k .. ':d'
    redis.call('ZREMRANGEBYSCORE', dk, '-inf', now)
    if redis.call('ZADD', dk, 'NX', now + DONE_S, batch .. '|' .. model) == 1 then
      add_spend(k, actual, model, pt, ct, n)
      if ttl > 0 then redis.call('EXPIRE', k, ttl) end
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
    redis.call('EXPIRE', dk, DONE_S)
  end
  return out
end

local function query()
  local k = key()
  prune_budget(k)
  return redis.call('HGETALL', k)
end

local ops = {a = admit, s = settle, r = renew, g = replay, q = query}
local results = {}
for op = 1, tonumber(ARGV[1]) do
  results[op] = ops[arg()]()
end
return results
""".replace("__TOMB_S__", str(TOMBSTONE_S)).replace("__DONE_S__", str(DONE_S))

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

    async def admit(
        self,
        buckets: list[BucketCheck],
        counters: list[CounterCheck],
        budgets: list[BudgetCheck],
        holder: str = "",
        hold_s: float = HOLD_S,
    ) -> Admission:
        _need_holder(holder, counters, budgets)
        keys = [b.key for b in buckets] + [c.key for c in counters] + [g.key for g in budgets]
        args: list[Any] = ["a", holder, hold_s, len(buckets), len(counters), len(budgets)]
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

    async def settle(
        self,
        buckets: list[tuple[BucketCheck, float]],
        counters: list[str],
        budgets: list[BudgetSettle],
        holder: str = "",
    ) -> list[int]:
        keys = [b.key for b, _ in buckets] + list(counters) + [g.key for g in budgets]
        args: list[Any] = ["s", holder, len(buckets), len(counters), len(budgets)]
        for b, delta in buckets:
            args += (b.rate, b.capacity, delta)
        for g in budgets:
            args += (g.actual, g.model, g.prompt_tokens, g.completion_tokens, g.ttl_s or 0)
        return [int(x) for x in await self._submit(keys, args, settle=True)]

    async def renew(self, holds: list[Hold], hold_s: float) -> None:
        pairs = [(k, h.holder) for h in holds for k in h.counters] + [
            (k + ":h", h.holder) for h in holds for k in h.budgets
        ]
        if not pairs:
            return
        args: list[Any] = ["r", hold_s, len(pairs)]
        for _, holder in pairs:
            args.append(holder)
        await self._submit([k for k, _ in pairs], args)

    async def replay(self, batch: str, entries: list[tuple[str, str, int, int, int, int, int | None]]) -> list[int]:
        """Spend settled while Redis was away, added once per (batch, key, model) however often it
        is sent: entries (key, model, usd_nano, prompt_tokens, completion_tokens, requests, ttl_s)."""
        args: list[Any] = ["g", batch, len(entries)]
        for _, model, usd, p, c, n, ttl in entries:
            args += (usd, model, p, c, n, ttl or 0)
        return [int(x) for x in await self._submit([e[0] for e in entries], args)]

    async def spend(self, key: str) -> Spend:
        flat = await self._submit([key], ["q"])  # expired reservations pruned first
        raw = {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
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
