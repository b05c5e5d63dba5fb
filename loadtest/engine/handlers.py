"""HTTP handlers of the inference endpoints: /v1/chat/completions, /v1/completions,
/v1/embeddings. Order of work per request: count it, apply a fault, validate, rate-limit
(remote), then answer through a generation (scheduled or direct)."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import wire
from .errors import RequestError, error_response
from .faults import Fault, format_retry_after
from .generation import DirectGen, EngineGone, ScheduledGen
from .requests import Job, plan_chat, plan_completion, prompt_list, require_model
from .stats import HeaderDict
from .textgen import float32_le_bytes
from .tokenize import count_tokens

if TYPE_CHECKING:
    from .server import SimEngine

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}


class _Dropped(Exception):
    """The connection was cut on purpose (drop fault)."""


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise _Dropped()


async def _hang() -> None:
    await asyncio.get_running_loop().create_future()  # never resolves; ends by cancellation


def _fault_response(engine: SimEngine, fault: Fault) -> web.Response:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = format_retry_after(fault.retry_after)
    return error_response(engine.config.is_remote, fault.status, fault.body, headers=headers)


class Inference:
    """Binds the handlers to one engine."""

    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ entry
    async def handle(self, request: web.Request) -> web.StreamResponse:
        eng = self.engine
        st = eng.stats
        path = request.path
        st.requests_total += 1
        st.requests_by_path[path] = st.requests_by_path.get(path, 0) + 1
        st.last_request_headers = HeaderDict(request.headers)
        done = False
        try:
            raw = await request.read()
            try:
                body: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            st.last_request_body = body if isinstance(body, dict) else None
            early, fault = await self.apply_fault(request)
            if early is not None:
                done = True
                return early
            if body is None:
                raise RequestError(400, "Invalid JSON body: expected a JSON object")
            model = require_model(body)
            if eng.config.served_model_names and model not in eng.config.served_model_names:
                raise self._unknown_model(model)
            if path.endswith("/embeddings"):
                resp = await self._embeddings(request, body, fault)
            else:
                resp = await self._generate(request, body, path.endswith("/chat/completions"), fault)
            done = True
            return resp
        except RequestError as err:
            st.errors += 1
            done = True
            return err.response(eng.config.is_remote)
        except _Dropped:
            st.failed += 1
            done = True
            return web.Response(status=499)  # never sent: the transport is closed
        except (ConnectionError, EngineGone):
            return web.Response(status=499)
        finally:
            if not done:
                st.cancelled += 1

    async def apply_fault(self, request: web.Request) -> tuple[web.StreamResponse | None, Fault | None]:
        """Apply the current fault if it hits this request: (answer to send now, drop fault)."""
        eng = self.engine
        fault = eng.faults.pick(request.path)
        if fault is None:
            return None, None
        if fault.kind == "status":
            eng.stats.failed += 1
            return _fault_response(eng, fault), None
        if fault.kind == "hang":
            await _hang()
        if fault.kind == "delay" and fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s / eng.config.time_scale)
        return None, (fault if fault.kind == "drop" else None)

    def guarded(self, handler: Any) -> Any:
        """Wrap a non-inference handler (/health, /v1/models, /metrics) so that faults whose
        `paths` name it apply (they are not counted as requests or cancellations)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            early, drop = await self.apply_fault(request)
            if early is not None:
                return early
            if drop is not None:
                self.engine.stats.failed += 1
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return web.Response(status=499)  # never sent: the transport is closed
            return await handler(request)

        return wrapped

    def _unknown_model(self, model: str) -> RequestError:
        if self.engine.config.is_remote:
            return RequestError(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        return RequestError(404, f"The model `{model}` does not exist.", param="model")

    def _rate_limit(self, job_tokens: int, model: str) -> web.Response | None:
        eng = self.engine
        if eng.limiter is None:
            return None
        limited = eng.limiter.check(eng.sim_now(), job_tokens)
        if limited is None:
            return None
        eng.stats.rate_limited += 1
        return error_response(
            True,
            429,
            limited.message(model),
            type_=limited.kind,
            code="rate_limit_exceeded",
            headers=limited.headers(eng.config.time_scale),
        )

    # ------------------------------------------------------------- generation
    async def _generate(
        self, request: web.Request, body: dict[str, Any], chat: bool, fault: Fault | None
    ) -> web.StreamResponse:
        eng = self.engine
        cfg = eng.config
        arrival = asyncio.get_running_loop().time()
        job = plan_chat(body, eng.textgen, cfg, eng.new_id) if chat else plan_completion(body, eng.textgen, cfg)
        if cfg.uses_scheduler and not eng.scheduler.fits(job.prompt_tokens, job.target):
            raise RequestError(
                400,
                f"The request needs more KV-cache blocks than the engine has "
                f"({cfg.kv_blocks} blocks of {cfg.block_size} tokens).",
                param="input_tokens",
            )
        limited = self._rate_limit(job.rate_limit_tokens, job.model)
        if limited is not None:
            return limited
        gen = ScheduledGen(eng, job, arrival) if cfg.uses_scheduler else DirectGen(eng, job, arrival)
        rid = eng.new_id("chatcmpl" if chat else "cmpl")
        try:
            if job.stream:
                return await self._stream(request, job, gen, rid, fault)
            await gen.wait_done()
            payload = self._full_body(job, rid)
            if fault is not None:
                await self._drop_mid_body(request, payload)
            eng.stats.completed += 1
            return web.Response(body=payload, content_type="application/json")
        finally:
            gen.close()

    def _full_body(self, job: Job, rid: str) -> bytes:
        eng = self.engine
        remote = eng.config.is_remote
        created = eng.created_now()
        use = wire.usage(job.prompt_tokens, job.completion_tokens, remote)
        lps = job.logprobs or [None] * job.n_choices
        if not job.chat:
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "text": "".join(p[: job.target]),
                    "logprobs": lp.completion(0, job.target) if lp else None,
                    "finish_reason": job.finish_reason,
                }
                for i, (p, lp) in enumerate(zip(job.pieces, lps, strict=True))
            ]
            return wire.completion_body(rid, created, job.model, choices, use)
        choices = []
        for i, (p, tool, lp) in enumerate(zip(job.pieces, job.tool, lps, strict=True)):
            if tool is None:
                choices.append(
                    {
                        "index": i,
                        "content": "".join(p[: job.target]),
                        "logprobs": lp.chat(0, job.target) if lp else None,
                        "finish_reason": job.finish_reason,
                    }
                )
            else:
                call: dict[str, Any] = {
                    "id": tool[0],
                    "type": "function",
                    "function": {"name": tool[1], "arguments": "".join(p[: job.target - 1])},
                }
                choices.append({"index": i, "content": None, "tool_calls": [call], "finish_reason": job.finish_reason})
        return wire.chat_body(remote, rid, created, job.model, choices, use)

    async def _drop_mid_body(self, request: web.Request, payload: bytes) -> None:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[: len(payload) // 2])
        _drop(request)

    def _token_logprobs(self, job: Job, choice: int, token: int) -> bytes:
        lp = job.logprobs[choice] if job.logprobs else None
        if lp is None:
            return b"null"
        return orjson.dumps(lp.chat(token, token + 1) if job.chat else lp.completion(token, token + 1))

    def _delta(self, job: Job, choice: int, token: int) -> bytes:
        tool = job.tool[choice]
        if not job.chat:
            return orjson.dumps(job.pieces[choice][token])
        if tool is None:
            return wire.content_delta(job.pieces[choice][token])
        if token == 0:
            return wire.tool_header_delta(tool[0], tool[1])
        return wire.tool_args_delta(job.pieces[choice][token - 1])

    async def _stream(
        self, request: web.Request, job: Job, gen: Any, rid: str, fault: Fault | None
    ) -> web.StreamResponse:
        eng = self.engine
        remote = eng.config.is_remote and job.chat
        chunks = wire.StreamChunks(job.chat, eng.config.is_remote, rid, eng.created_now(), job.model, job.include_usage)
        limit = fault.after_chunks if fault is not None else None
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        if limit is not None and limit <= 0:
            _drop(request)
        n, target, p_tokens = job.n_choices, job.target, job.prompt_tokens
        cont = job.continuous_usage
        written = sent = 0
        while sent < target:
            upto = await gen.wait(sent)
            out: list[bytes] = []
            if sent == 0 and job.chat:
                u = wire.usage(p_tokens, 0, False) if cont else None
                out.extend(chunks.role(i, u) for i in range(n))
            for t in range(sent, upto):
                last = t == target - 1
                fin = job.finish_reason if (last and not remote) else None
                u = wire.usage(p_tokens, t + 1, False) if cont else None
                out.extend(
                    chunks.chunk(i, self._delta(job, i, t), fin, u, self._token_logprobs(job, i, t)) for i in range(n)
                )
                if last and remote:
                    out.extend(chunks.finish_only(i, job.finish_reason) for i in range(n))
            sent = upto
            final = sent >= target
            if final:
                if job.include_usage:
                    out.append(chunks.usage_chunk(wire.usage(p_tokens, job.completion_tokens, remote)))
                out.append(wire.DONE)
            if limit is not None and (final or written + len(out) >= limit):
                # Cut after `limit` events in all; [DONE] never gets through.
                keep = min(limit - written, len(out) - 1 if final else len(out))
                if keep > 0:
                    await resp.write(b"".join(out[:keep]))
                _drop(request)
            await resp.write(b"".join(out))
            written += len(out)
        await resp.write_eof()
        eng.stats.completed += 1
        return resp

    # -------------------------------------------------------------- embeddings
    async def _embeddings(self, request: web.Request, body: dict[str, Any], fault: Fault | None) -> web.StreamResponse:
        eng = self.engine
        cfg = eng.config
        inputs = prompt_list(body.get("input"), "input")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise RequestError(400, f"Invalid encoding_format: {fmt!r}", param="encoding_format")
        p_tokens = sum(count_tokens(x) for x in inputs)
        if cfg.ttft_s or (cfg.is_remote and cfg.remote_latency_s):
            delay = cfg.ttft_s + (cfg.remote_latency_s if cfg.is_remote else 0.0)
            await asyncio.sleep(delay / cfg.time_scale)
        limited = self._rate_limit(p_tokens, body["model"])
        if limited is not None:
            return limited
        dim = _int_field_or(body.get("dimensions"), cfg.embedding_dim)
        vectors: list[Any] = []
        for data in inputs:
            vec = eng.textgen.embedding(data, dim)
            if fmt == "base64":
                vectors.append(base64.b64encode(float32_le_bytes(vec)).decode())
            else:
                vectors.append(vec.tolist())
        eng.stats.prompt_tokens += p_tokens
        if cfg.is_remote:
            eng.stats.cost_usd += p_tokens * cfg.price_per_input_token
        payload = wire.embeddings_body(
            cfg.is_remote, eng.new_id("embd"), eng.created_now(), body["model"], vectors, p_tokens
        )
        if fault is not None:
            await self._drop_mid_body(request, payload)
        eng.stats.completed += 1
        return web.Response(body=payload, content_type="application/json")


def _int_field_or(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default
