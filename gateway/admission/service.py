"""Attained service per agent session: the tokens already served to it (output tokens weighted),
decayed with a half-life, so a session that consumed much waits behind a fresh or light one
(Autellix's program-level least attained service).

Parallel calls of one session all add to the same figure when they finish, so an agent fanning out
ten sub-calls is charged for all ten; harnesses that give each sub-agent its own session id
(Claude Code's sub-agents) are counted per sub-agent.

MemoryService keeps this process's figures (bounded LRU, idle sessions forgotten). RedisService
shares them between processes: each completion adds with one Lua call (decay applied in Redis, from
the stored timestamp); a waiting request reads its session's figure once, when it is queued.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.admission.config import FairnessConfig
    from gateway.context import RequestContext

# Headers agent harnesses send to name a session (the gateway's own first).
SESSION_HEADERS = ("x-switchyard-session", "x-claude-code-session-id", "session_id", "x-session-affinity")
MAX_SESSION_CHARS = 128


def session_of(ctx: "RequestContext") -> str:
    """Whose service this request counts toward: the session (from the harness's header, else the
    OpenAI `user` field), else the key; always within the team, bounded in size."""
    team = ctx.principal.team if ctx.principal is not None else ""
    sid = ctx.session_id
    if sid is None and ctx.request_headers is not None:
        for name in SESSION_HEADERS[1:]:
            value = ctx.request_headers.get(name)
            if value:
                sid = value
                break
    if not sid:
        sid = "key:" + (ctx.principal.key_name if ctx.principal is not None else "")
    if len(sid) > MAX_SESSION_CHARS:
        sid = "h:" + hashlib.blake2b(sid.encode("utf-8", "replace"), digest_size=16).hexdigest()
    return f"{team}|{sid}"


class ServiceStore(Protocol):
    async def get(self, session: str) -> float: ...

    def add(self, session: str, tokens: float) -> None: ...


class MemoryService:
    def __init__(self, cfg: "FairnessConfig", clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._rate = math.log(2) / cfg.half_life_s
        self._sessions: OrderedDict[str, tuple[float, float]] = OrderedDict()  # session -> (value, at)

    def _decayed(self, value: float, at: float, now: float) -> float:
        return value * math.exp(-self._rate * (now - at))

    def peek(self, session: str) -> float:
        entry = self._sessions.get(session)
        if entry is None:
            return 0.0
        now = self.clock()
        if now - entry[1] > self.cfg.forget_after_s:
            del self._sessions[session]
            return 0.0
        return self._decayed(entry[0], entry[1], now)

    async def get(self, session: str) -> float:
        return self.peek(session)

    def add(self, session: str, tokens: float) -> None:
        now = self.clock()
        self._sessions[session] = (self.peek(session) + tokens, now)
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.cfg.max_sessions:
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)


# KEYS[1] = the session's hash; ARGV = tokens, now (s), decay rate (1/s), ttl (s)
_ADD = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local t = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local now = tonumber(ARGV[2])
v = v * math.exp(-tonumber(ARGV[3]) * math.max(0, now - t)) + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'v', tostring(v), 't', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return tostring(v)
"""


class RedisService:
    """Shared figures; a Redis fault falls back to this process's own figures (logged by the caller)."""

    def __init__(self, cfg: "FairnessConfig", redis: Any, prefix: str, spawn: Callable[[Any], None]) -> None:
        self.cfg = cfg
        self.redis = redis
        self.prefix = prefix + "svc:"
        self.spawn = spawn
        self.local = MemoryService(cfg, clock=time.time)
        self._rate = math.log(2) / cfg.half_life_s
        self._script = redis.register_script(_ADD)

    async def get(self, session: str) -> float:
        try:
            v, t = await self.redis.hmget(self.prefix + session, "v", "t")
        except Exception:
            return self.local.peek(session)
        if v is None or t is None:
            return 0.0
        return float(v) * math.exp(-self._rate * max(0.0, time.time() - float(t)))

    def add(self, session: str, tokens: float) -> None:
        self.local.add(session, tokens)
        self.spawn(self._add(session, tokens))

    async def _add(self, session: str, tokens: float) -> None:
        try:
            await self._script(
                keys=[self.prefix + session],
                args=[tokens, time.time(), self._rate, int(self.cfg.forget_after_s)],
            )
        except Exception:
            return  # counted locally; the shared figure misses this completion
