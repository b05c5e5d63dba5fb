"""The Batch API's state in Redis (`[batch] store = "redis"`): the gateway's `[redis]` client, keys
under `<[redis].key_prefix>batch:`, so gateway processes on several machines share the work.

Same interface and semantics as store.py's SqliteStore (the `BatchStore` protocol). Keys:

    f:<id>, fc:<id>         file hash (team, purpose, filename, bytes, created_at); its content
    ft:<team>, fp:<purpose>:<team>   the team's files (all / of one purpose), zsets scored by `seq`
    b:<id>                  batch hash: the columns of SqliteStore's `batches` (obj as JSON), seq
    bt:<team>, active       the team's batches / the active ones (zsets scored by `seq`)
    l:<id>:meta / :body / :rank    per line idx: [custom_id, group] JSON, the request body, its rank
                            in claim order (group, then file order)
    l:<id>:free             zset of lines not done and not leased, scored by rank (claim order)
    l:<id>:lease            zset of lines not done and leased (or given back for later), scored
                            by the lease's end; l:<id>:own: idx -> owner
    l:<id>:res              idx -> "1"/"0" (ok) + the output line: the done lines
    seq                     a counter: newest-first order of files and batches (as SQLite's rowid)

Leases are a sorted set, not Redis Streams: a consumer group's pending list gives at-least-once
delivery but no "done exactly once" record, no claim order by prefix group, and no delayed give-back,
so a lease zset plus the `res` hash (HSETNX) is simpler and does all three. Every change to a line
(claim, renew, release, complete, fail) is one Lua script, atomic, on Redis's own clock (TIME), so
gateways on different machines agree on when a lease ends. `complete` writes the output only when
`res` has no entry yet (HSETNX) and bumps the batch's counters in the same script: two workers racing
on one line give one output line. Reads are bounded: listings are ZREVRANGEBYSCORE with LIMIT,
results are read with HSCAN, a claim takes back at most 1000 expired leases per call. Large writes
and reads go in pieces (BYTES, CHUNK lines), since `[redis].timeout_s` bounds every round trip.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from gateway.batch.store import ACTIVE, TIMESTAMPS, Line, Progress

NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# KEYS free lease own rank meta body; ARGV n lease_s owner
CLAIM = (
    NOW
    + """
local exp = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, i in ipairs(exp) do
  redis.call('ZREM', KEYS[2], i)
  redis.call('HDEL', KEYS[3], i)
  redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[4], i), i)
end
local got = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, i in ipairs(got) do
  redis.call('ZREM', KEYS[1], i)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), i)
  redis.call('HSET', KEYS[3], i, ARGV[3])
  out[#out + 1] = i
  out[#out + 1] = redis.call('HGET', KEYS[5], i)
  out[#out + 1] = redis.call('HGET', KEYS[6], i)
end
return out
"""
)
# KEYS lease own; ARGV lease_s owner idx...
RENEW = (
    NOW
    + """
for k = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[k]) == ARGV[2] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[k])
  end
end
return 0
"""
)
# KEYS free lease own rank; ARGV after_s owner idx...
RELEASE = (
    NOW
    + """
local after = tonumber(ARGV[1])
for k = 3, #ARGV do
  local i = ARGV[k]
  if redis.call('HGET', KEYS[3], i) == ARGV[2] then
    redis.call('HDEL', KEYS[3], i)
    if after > 0 then
      redis.call('ZADD', KEYS[2], now + after, i)
    else
      redis.call('ZREM', KEYS[2], i)
      redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[4], i), i)
    end
  end
end
return 0
"""
)
# KEYS res free lease own batch; ARGV prompt completion, then (idx, "1"/"0" .. result) pairs: done
# once each (HSETNX); returns how many this call wrote, the batch's counters bumped by them
FINISH = """
local ok, bad = 0, 0
for k = 3, #ARGV, 2 do
  local i = ARGV[k]
  if redis.call('HSETNX', KEYS[1], i, ARGV[k + 1]) == 1 then
    redis.call('ZREM', KEYS[2], i)
    redis.call('ZREM', KEYS[3], i)
    redis.call('HDEL', KEYS[4], i)
    if string.sub(ARGV[k + 1], 1, 1) == '1' then ok = ok + 1 else bad = bad + 1 end
  end
end
if ok + bad > 0 then
  redis.call('HINCRBY', KEYS[5], 'completed', ok)
  redis.call('HINCRBY', KEYS[5], 'failed', bad)
  redis.call('HINCRBY', KEYS[5], 'prompt_tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'completion_tokens', ARGV[2])
end
return ok + bad
"""
# KEYS free lease res
PROGRESS = (
    NOW
    + """
local expired = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
return {redis.call('ZCARD', KEYS[1]) + expired, redis.call('ZCARD', KEYS[2]) - expired, redis.call('HLEN', KEYS[3])}
"""
)
# KEYS batch active; ARGV status id active(1/0) n_when when... then field value pairs
SET_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
local nw, hit = tonumber(ARGV[4]), false
for k = 5, 4 + nw do if ARGV[k] == cur then hit = true end end
if not hit then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for k = 5 + nw, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[k], ARGV[k + 1]) end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'seq'), ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""
# KEYS file all-of-team of-purpose content; ARGV team id
DELETE_FILE = """
if redis.call('HGET', KEYS[1], 'team') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

FILE_FIELDS = ("id", "team", "purpose", "filename", "bytes", "created_at")
BATCH_FIELDS = (
    "id team key_name status created_at expires_at model total completed failed prompt_tokens completion_tokens "
    "output_file_id error_file_id obj".split()
    + list(TIMESTAMPS)
)
INTS = {"bytes", "created_at", "expires_at", "total", "completed", "failed", "prompt_tokens", "completion_tokens"}
INTS.update(TIMESTAMPS)
CHUNK = 500  # lines per command (creating a batch, failing its rest, reading its results)
BYTES = 4 << 20  # most content per round trip: [redis].timeout_s bounds each one (sending included)
STAGING_S = 3600  # what a process wrote before it died mid-upload expires after this


class RedisStore:
    def __init__(self, client: Redis, prefix: str) -> None:
        self.r = client  # the gateway's; closed by the gateway, after the batch service stopped
        self.p = prefix
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._finish = client.register_script(FINISH)
        self._progress = client.register_script(PROGRESS)
        self._set_status = client.register_script(SET_STATUS)
        self._delete_file = client.register_script(DELETE_FILE)

    def present(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    def _l(self, batch_id: str, part: str) -> str:
        return f"{self.p}l:{batch_id}:{part}"

    # -- files ---------------------------------------------------------------------------------------
    async def put_file(self, row: dict[str, Any], content: bytes) -> None:
        """The content goes up BYTES at a time into a staging key (expiring, should this process die),
        then one MULTI renames it into place with the metadata and the listings."""
        seq = await self.r.incr(self.p + "seq")
        fid, team = row["id"], row["team"]
        fields: dict[Any, Any] = {k: str(row[k]) for k in ("id", "team", "purpose", "filename", "created_at")}
        staging = f"{self.p}fc:{fid}:{secrets.token_hex(6)}"
        for start in range(0, len(content), BYTES):
            await self.r.append(staging, content[start : start + BYTES])
            if start == 0:
                await self.r.expire(staging, STAGING_S)
        async with self.r.pipeline(transaction=True) as pipe:
            if content:
                pipe.rename(staging, f"{self.p}fc:{fid}")
                pipe.persist(f"{self.p}fc:{fid}")
            else:
                pipe.set(f"{self.p}fc:{fid}", b"")
            pipe.hset(f"{self.p}f:{fid}", mapping={**fields, "bytes": str(len(content))})
            pipe.zadd(f"{self.p}ft:{team}", {fid: seq})
            pipe.zadd(f"{self.p}fp:{row['purpose']}:{team}", {fid: seq})
            await pipe.execute()

    async def get_file(self, team: str, file_id: str) -> dict[str, Any] | None:
        vals = await self.r.hmget(f"{self.p}f:{file_id}", list(FILE_FIELDS))
        return _file(vals, team)

    async def list_files(self, team: str, purpose: str | None, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first; `after`: the id the previous page ended with."""
        every = f"{self.p}ft:{team}"  # `after` is looked up there: it may be of another purpose
        ids = await self._page(f"{self.p}fp:{purpose}:{team}" if purpose else every, after, limit, every)
        async with self.r.pipeline(transaction=False) as pipe:
            for fid in ids:
                pipe.hmget(f"{self.p}f:{fid.decode()}", list(FILE_FIELDS))
            rows = [_file(v, team) for v in await pipe.execute()] if ids else []
        return [r for r in rows if r is not None]

    async def _page(self, key: str, after: str | None, limit: int, where: str | None = None) -> list[bytes]:
        top: Any = "+inf"
        if after:
            score = await self.r.zscore(where or key, after)
            if score is None:
                return []
            top = f"({score!r}"
        ids: Any = await self.r.zrevrangebyscore(key, top, "-inf", start=0, num=limit)
        return list(ids)

    async def file_content(self, team: str, file_id: str) -> bytes | None:
        """Read BYTES at a time (GETRANGE): each round trip stays within [redis].timeout_s."""
        owner: Any = await self.r.hget(f"{self.p}f:{file_id}", "team")
        if owner is None or owner.decode() != team:
            return None
        key = f"{self.p}fc:{file_id}"
        size = await self.r.strlen(key)
        parts: list[Any] = [await self.r.getrange(key, start, start + BYTES - 1) for start in range(0, size, BYTES)]
        return b"".join(parts)

    async def delete_file(self, team: str, file_id: str) -> bool:
        purpose: Any = await self.r.hget(f"{self.p}f:{file_id}", "purpose")
        if purpose is None:
            return False
        keys = [f"{self.p}f:{file_id}", f"{self.p}ft:{team}", f"{self.p}fp:{purpose.decode()}:{team}"]
        keys.append(f"{self.p}fc:{file_id}")
        return bool(await self._delete_file(keys=keys, args=[team, file_id]))

    # -- batches -------------------------------------------------------------------------------------
    async def create_batch(self, row: dict[str, Any], lines: list[Line]) -> None:
        """The lines first (CHUNK lines or BYTES of bodies per round trip, their keys expiring should
        this process die), then one MULTI keeps them and makes the batch visible."""
        seq = await self.r.incr(self.p + "seq")
        bid, team = row["id"], row["team"]
        fields: dict[Any, Any] = {k: str(row[k]) for k in ("id", "team", "key_name", "status", "model")}
        fields.update(created_at=row["created_at"], expires_at=row["expires_at"], total=len(lines), seq=seq)
        fields.update(completed=0, failed=0, prompt_tokens=0, completion_tokens=0, obj=orjson.dumps(row["obj"]))
        fields.update({t: row[t] for t in ("in_progress_at", "failed_at") if row.get(t) is not None})
        ranked = sorted(lines, key=lambda ln: (ln.grp, ln.idx))
        keys = [self._l(bid, k) for k in ("meta", "body", "rank", "free")]
        part: list[tuple[int, Line]] = []
        size = 0
        for rank, ln in enumerate(ranked):
            part.append((rank, ln))
            size += len(ln.body)
            if len(part) >= CHUNK or size >= BYTES or rank == len(ranked) - 1:
                async with self.r.pipeline(transaction=False) as pipe:
                    pipe.hset(keys[0], mapping={ln.idx: orjson.dumps([ln.custom_id, ln.grp]) for _, ln in part})
                    pipe.hset(keys[1], mapping={ln.idx: ln.body for _, ln in part})
                    pipe.hset(keys[2], mapping={ln.idx: rank for rank, ln in part})
                    pipe.zadd(keys[3], {str(ln.idx): rank for rank, ln in part})
                    for key in keys:
                        pipe.expire(key, STAGING_S)
                    await pipe.execute()
                part, size = [], 0
        async with self.r.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.persist(key)
            pipe.hset(f"{self.p}b:{bid}", mapping=fields)
            pipe.zadd(f"{self.p}bt:{team}", {bid: seq})
            if row["status"] in ACTIVE:
                pipe.zadd(self.p + "active", {bid: seq})
            await pipe.execute()

    async def _batches(self, ids: list[bytes] | list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hgetall(f"{self.p}b:{bid.decode() if isinstance(bid, bytes) else bid}")
            found = await pipe.execute()
        return [_batch(h) for h in found if h]

    async def get_batch(self, batch_id: str, team: str | None = None) -> dict[str, Any] | None:
        rows = await self._batches([batch_id])
        return rows[0] if rows and (team is None or rows[0]["team"] == team) else None

    async def list_batches(self, team: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        return await self._batches(await self._page(f"{self.p}bt:{team}", after, limit))

    async def active_batches(self) -> list[dict[str, Any]]:
        ids: Any = await self.r.zrange(self.p + "active", 0, -1)
        rows = await self._batches(ids)
        return [r for r in rows if r["status"] in ACTIVE]

    async def set_status(
        self, batch_id: str, status: str, when: Iterable[str], extra: dict[str, Any] | None = None
    ) -> bool:
        """Move the batch to `status` (its `<status>_at` stamped) if it is in one of `when`; True
        when this call made the move (so exactly one worker finalizes, expires ...)."""
        fields = {f"{status}_at": int(time.time())} if f"{status}_at" in TIMESTAMPS else {}
        fields.update({k: v for k, v in (extra or {}).items() if v is not None})
        when = tuple(when)
        args: list[Any] = [status, batch_id, int(status in ACTIVE), len(when), *when]
        for k, v in fields.items():
            args += [k, v]
        keys = [f"{self.p}b:{batch_id}", self.p + "active"]
        return bool(await self._set_status(keys=keys, args=args))

    # -- lines ---------------------------------------------------------------------------------------
    async def claim(self, batch_id: str, owner: str, n: int, lease_s: float) -> list[Line]:
        """Up to `n` pending lines whose lease is free or expired, grouped by prefix (grp) then in
        file order, leased to `owner`."""
        if n <= 0:
            return []
        keys = [self._l(batch_id, k) for k in ("free", "lease", "own", "rank", "meta", "body")]
        out = await self._claim(keys=keys, args=[n, lease_s, owner])
        lines = []
        for k in range(0, len(out), 3):
            cid, grp = orjson.loads(out[k + 1])
            lines.append(Line(batch_id, int(out[k]), cid, grp, bytes(out[k + 2])))
        return lines

    async def renew(self, batch_id: str, idxs: list[int], owner: str, lease_s: float) -> None:
        if idxs:
            await self._renew(keys=[self._l(batch_id, "lease"), self._l(batch_id, "own")], args=[lease_s, owner, *idxs])

    async def release(self, batch_id: str, idxs: list[int], owner: str, after_s: float = 0.0) -> None:
        """Give lines back (not run): claimable again after `after_s`."""
        if idxs:
            keys = [self._l(batch_id, k) for k in ("free", "lease", "own", "rank")]
            await self._release(keys=keys, args=[after_s, owner, *idxs])

    def _finish_keys(self, batch_id: str) -> list[str]:
        return [*(self._l(batch_id, k) for k in ("res", "free", "lease", "own")), f"{self.p}b:{batch_id}"]

    async def complete(self, batch_id: str, idx: int, ok: bool, result: bytes, tokens: tuple[int, int]) -> bool:
        """The line's output, once: False (and nothing written) when it was already done."""
        args: list[Any] = [tokens[0], tokens[1], idx, (b"1" if ok else b"0") + result]
        return bool(await self._finish(keys=self._finish_keys(batch_id), args=args))

    async def fail_pending(self, batch_id: str, result_of: Callable[[str], bytes]) -> int:
        """Every line not done yet becomes a failed line (`result_of(custom_id)`): an expired batch.
        CHUNK lines per script call; each line done once whatever races with it."""
        total = 0
        while True:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.zrange(self._l(batch_id, "free"), 0, CHUNK - 1)
                pipe.zrange(self._l(batch_id, "lease"), 0, CHUNK - 1)
                free, leased = await pipe.execute()
            idxs = list(dict.fromkeys([*free, *leased]))
            if not idxs:
                return total
            metas = await self.r.hmget(self._l(batch_id, "meta"), idxs)
            args: list[Any] = [0, 0]
            for i, meta in zip(idxs, metas, strict=True):
                args += [i, b"0" + result_of(orjson.loads(meta)[0] if meta else "")]
            total += int(await self._finish(keys=self._finish_keys(batch_id), args=args))

    async def progress(self, batch_id: str) -> Progress:
        pending, leased, done = await self._progress(
            keys=[self._l(batch_id, "free"), self._l(batch_id, "lease"), self._l(batch_id, "res")]
        )
        return Progress(int(pending), int(leased), int(done))

    async def results(self, batch_id: str) -> list[tuple[bool, bytes]]:
        """(ok, output line) of every done line, in file order (read with HSCAN, CHUNK at a time)."""
        found = [(int(i), bytes(v)) async for i, v in self.r.hscan_iter(self._l(batch_id, "res"), count=CHUNK)]
        found.sort()
        return [(v[:1] == b"1", v[1:]) for _, v in found]


def _file(vals: list[Any], team: str) -> dict[str, Any] | None:
    if vals[0] is None or vals[1] is None or vals[1].decode() != team:
        return None
    return {k: int(v) if k in INTS else v.decode() for k, v in zip(FILE_FIELDS, vals, strict=True)}


def _batch(h: dict[bytes, bytes]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(BATCH_FIELDS)
    for k, v in h.items():
        key = k.decode()
        if key == "obj":
            row["obj"] = orjson.loads(v)
        elif key in INTS:
            row[key] = int(v)
        elif key in row:
            row[key] = v.decode()
    return row
