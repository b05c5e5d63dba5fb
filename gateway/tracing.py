"""Optional OpenTelemetry tracing: one span per request, `[tracing] enabled = true`.

Needs the extra: `pip install 'switchyard[tracing]'` (opentelemetry-sdk and the OTLP/HTTP exporter).
Off by default; then this module is never imported and costs nothing.

The span is built entirely when the request has settled (`on_complete`), with its real start time
(arrival) and end time, so no per-request state is kept outside the RequestContext. Spans are
exported by a BatchSpanProcessor on its own thread (never on the event loop). Each Gateway has its
own TracerProvider (no global), shut down when the gateway stops (also after a reload).

Attributes: switchyard.request_id, switchyard.model, switchyard.deployment, switchyard.team,
switchyard.key, switchyard.endpoint, switchyard.stream, http.response.status_code,
gen_ai.usage.input_tokens / output_tokens, switchyard.attempts; an event `first_token` at the time
the first byte went to the client. The status is ERROR for 5xx. A W3C `traceparent` header from
the client makes the span a child of the agent's own span (same trace id).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext

if TYPE_CHECKING:
    from gateway.runtime import Gateway


class TracingPhase:
    name = "tracing"

    def __init__(self, gateway: "Gateway", exporter: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
            from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        except ImportError:
            raise RuntimeError("[tracing] enabled needs OpenTelemetry: pip install 'switchyard[tracing]'") from None
        cfg = gateway.config.tracing
        if exporter is None:
            if cfg.exporter == "console":
                exporter = ConsoleSpanExporter()
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(endpoint=cfg.endpoint, timeout=5)
        self.provider = TracerProvider(
            sampler=TraceIdRatioBased(cfg.sample_ratio),
            resource=Resource.create({"service.name": cfg.service_name}),
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("switchyard")
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.propagator = TraceContextTextMapPropagator()

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        now_ns, now_pc = time.time_ns(), time.perf_counter()

        def wall(pc: float) -> int:
            return now_ns - int((now_pc - pc) * 1e9)

        p = ctx.principal
        attrs: dict[str, Any] = {
            "switchyard.request_id": ctx.request_id,
            "switchyard.endpoint": ctx.endpoint_name,
            "switchyard.model": ctx.model,
            "switchyard.stream": ctx.stream,
            "switchyard.attempts": ctx.attempts,
            "http.response.status_code": ctx.status,
        }
        if p is not None:
            attrs.update({"switchyard.team": p.team, "switchyard.key": p.key_name})
        if ctx.deployment is not None:
            attrs["switchyard.deployment"] = ctx.deployment.name
        if ctx.usage.known:
            attrs.update(
                {
                    "gen_ai.usage.input_tokens": ctx.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": ctx.usage.completion_tokens,
                }
            )
        parent = self.propagator.extract(ctx.request_headers) if ctx.request_headers is not None else None
        span = self.tracer.start_span(
            f"{ctx.endpoint_name} {ctx.model}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=wall(ctx.started),
            attributes=attrs,
        )
        if ctx.first_byte_at is not None:
            span.add_event("first_token", timestamp=wall(ctx.first_byte_at))
        if ctx.status >= 500:
            span.set_status(Status(StatusCode.ERROR, ctx.error_type or str(ctx.status)))
        span.end(end_time=wall(ctx.finished_at) if ctx.finished_at is not None else now_ns)

    async def close(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.provider.shutdown)  # flushes


def tracing_phase(gateway: "Gateway") -> TracingPhase | None:
    return TracingPhase(gateway) if gateway.config.tracing.enabled else None
