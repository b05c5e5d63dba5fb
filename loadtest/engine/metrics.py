"""Prometheus text exposition (format 0.0.4) per profile, written by hand from the stats.

vllm: names and help texts of vllm/v1/metrics/loggers.py, labels model_name and engine.
sglang / tgi / llamacpp: the main families those servers export. plain / remote: none.
"""

from __future__ import annotations

from typing import Any

from .stats import EngineStats, Histogram


def go_float(value: float) -> str:
    """prometheus_client's floatToGoString."""
    d = float(value)
    if d == float("inf"):
        return "+Inf"
    if d == float("-inf"):
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def _labels(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')) for k, v in pairs]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


class Writer:
    def __init__(self, labels: list[tuple[str, str]], created: float | None) -> None:
        self.lines: list[str] = []
        self.labels = labels
        self.created = created

    def _head(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def gauge(self, name: str, help_: str, value: float) -> None:
        self._head(name, "gauge", help_)
        self.lines.append(f"{name}{_labels(self.labels)} {go_float(value)}")

    def counter(self, name: str, help_: str, series: list[tuple[list[tuple[str, str]], float]]) -> None:
        """name without _total; series = [(extra labels, value)]."""
        self._head(f"{name}_total", "counter", help_)
        for extra, value in series:
            self.lines.append(f"{name}_total{_labels(self.labels + extra)} {go_float(value)}")
            if self.created is not None:
                self.lines.append(f"{name}_created{_labels(self.labels + extra)} {go_float(self.created)}")

    def counter1(self, name: str, help_: str, value: float) -> None:
        self.counter(name, help_, [([], value)])

    def histogram(self, name: str, help_: str, hist: Histogram) -> None:
        self._head(name, "histogram", help_)
        lab = self.labels
        for le, n in hist.cumulative():
            self.lines.append(f"{name}_bucket{_labels(lab + [('le', le)])} {go_float(n)}")
        self.lines.append(f"{name}_count{_labels(lab)} {go_float(hist.count)}")
        self.lines.append(f"{name}_sum{_labels(lab)} {go_float(hist.sum)}")
        if self.created is not None:
            self.lines.append(f"{name}_created{_labels(lab)} {go_float(self.created)}")

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def _vllm(cfg: Any, st: EngineStats, created: float) -> bytes:
    w = Writer([("model_name", cfg.model_name), ("engine", "0")], created)
    w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", st.running)
    w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", st.waiting)
    usage = st.kv_blocks_used / cfg.kv_blocks
    if cfg.legacy_kv_metric:
        w.gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", usage)
        w.counter1(
            "vllm:gpu_prefix_cache_queries",
            "GPU prefix cache queries, in terms of number of queried tokens.",
            st.prefix_queries_tokens,
        )
        w.counter1(
            "vllm:gpu_prefix_cache_hits",
            "GPU prefix cache hits, in terms of number of cached tokens.",
            st.prefix_hits_tokens,
        )
    else:
        w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage)
        w.counter1(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            st.prefix_queries_tokens,
        )
        w.counter1(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", st.prefix_hits_tokens
        )
    w.counter1("vllm:num_preemptions", "Cumulative number of preemption from the engine.", st.preempted)
    w.counter1("vllm:prompt_tokens", "Number of prefill tokens processed.", st.prompt_tokens)
    w.counter1("vllm:generation_tokens", "Number of generation tokens processed.", st.completion_tokens)
    by = st.finished_by_reason
    w.counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [
            ([("finished_reason", "stop")], by.get("stop", 0) + by.get("tool_calls", 0)),
            ([("finished_reason", "length")], by.get("length", 0)),
            ([("finished_reason", "abort")], st.cancelled),
        ],
    )
    w.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", st.ttft)
    w.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", st.e2e)
    return w.text()


def _sglang(cfg: Any, st: EngineStats, created: float) -> bytes:
    w = Writer([("model_name", cfg.model_name)], created)
    w.gauge("sglang:num_running_reqs", "The number of running requests.", st.running)
    w.gauge("sglang:num_used_tokens", "The number of used tokens.", st.kv_blocks_used * cfg.block_size)
    w.gauge("sglang:token_usage", "The token usage.", st.kv_blocks_used / cfg.kv_blocks)
    w.gauge("sglang:gen_throughput", "The generation throughput (token/s).", 0.0)
    w.gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", st.waiting)
    rate = st.prefix_hits_tokens / st.prefix_queries_tokens if st.prefix_queries_tokens else 0.0
    w.gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", rate)
    w.counter1("sglang:prompt_tokens", "Number of prefill tokens processed.", st.prompt_tokens)
    w.counter1("sglang:generation_tokens", "Number of generation tokens processed.", st.completion_tokens)
    w.counter1("sglang:num_requests", "The number of processed requests.", sum(st.finished_by_reason.values()))
    w.histogram("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", st.ttft)
    w.histogram("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", st.e2e)
    return w.text()


def _tgi(cfg: Any, st: EngineStats, created: float) -> bytes:
    w = Writer([], None)
    w.gauge("tgi_queue_size", "Current queue size", st.waiting)
    w.gauge("tgi_batch_current_size", "Current batch size", st.running)
    w.gauge("tgi_batch_current_max_tokens", "Maximum tokens for the current batch", st.kv_blocks_used * cfg.block_size)
    lines = w.lines
    for name, value in (
        ("tgi_request_count", st.requests_total),
        ("tgi_request_success", sum(st.finished_by_reason.values())),
        ("tgi_request_failure", st.failed + st.errors),
    ):
        lines += [f"# TYPE {name} counter", f"{name} {value}"]
    return w.text()


def _llamacpp(cfg: Any, st: EngineStats, created: float) -> bytes:
    w = Writer([], None)
    lines = w.lines

    def one(name: str, kind: str, help_: str, value: float) -> None:
        lines.extend(
            [f"# HELP llamacpp:{name} {help_}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value:g}"]
        )

    one("prompt_tokens_total", "counter", "Number of prompt tokens processed.", st.prompt_tokens)
    one("tokens_predicted_total", "counter", "Number of generation tokens processed.", st.completion_tokens)
    one(
        "kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.", st.kv_blocks_used / cfg.kv_blocks
    )
    one("kv_cache_tokens", "gauge", "KV-cache tokens.", st.kv_blocks_used * cfg.block_size)
    one("requests_processing", "gauge", "Number of requests processing.", st.running)
    one("requests_deferred", "gauge", "Number of requests deferred.", st.waiting)
    return w.text()


_RENDERERS = {"vllm": _vllm, "sglang": _sglang, "tgi": _tgi, "llamacpp": _llamacpp}


def has_metrics(profile: str) -> bool:
    return profile in _RENDERERS


def render(cfg: Any, stats: EngineStats, created: float) -> bytes | None:
    """The /metrics body, or None when the profile exports no metrics (plain, remote)."""
    fn = _RENDERERS.get(cfg.profile)
    return fn(cfg, stats, created) if fn else None
