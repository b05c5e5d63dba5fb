"""Engine configuration: one dataclass, every field documented.

All durations are *simulated* seconds; the engine divides them by `time_scale` before
sleeping, so `time_scale=10` runs ten times faster in wall time while every reported
latency (metrics, Retry-After windows) stays in simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

PROFILES = ("vllm", "sglang", "tgi", "llamacpp", "plain", "remote")

# Values used by EngineConfig.realistic(): a mid-size model on one GPU.
REALISTIC = {
    "prefill_s_per_token": 0.00005,
    "decode_base_s": 0.01,
    "decode_per_seq_s": 0.0002,
}


@dataclass
class EngineConfig:
    # Which server to imitate: "vllm" | "sglang" | "tgi" | "llamacpp" | "plain" | "remote".
    # Decides the /metrics families, error shapes and, for "remote", the OpenAI wire flavour,
    # rate limits, fixed latency and unlimited capacity.
    profile: str = "vllm"
    # Seed for generated text, ids, fault probability and embedding vectors.
    seed: int = 0
    # Every simulated duration is divided by this before sleeping (10 = ten times faster).
    time_scale: float = 1.0
    # Fixed extra latency before the first token of each request (API server overhead).
    ttft_s: float = 0.0
    # Fixed delay added to every decode step (base inter-token latency).
    itl_s: float = 0.0
    # Natural completion length in tokens when the request sets no max_tokens; the answer
    # length is min(max_tokens or max_completion_tokens, natural length).
    output_tokens: int = 16
    # When > output_tokens, the natural length varies per request in
    # [output_tokens, output_tokens_max], chosen deterministically from seed and prompt.
    output_tokens_max: int = 0
    # Continuous batching: at most this many sequences run in one decode step.
    max_num_seqs: int = 256
    # KV cache size in blocks, and tokens per block.
    kv_blocks: int = 2048
    block_size: int = 16
    # Batching cost model (all 0 by default = no model cost; see realistic()).
    # Each step costs prefill_s_per_token * (uncached prompt tokens admitted this step)
    # + decode_base_s + decode_per_seq_s * batch_size + itl_s.
    prefill_s_per_token: float = 0.0
    decode_base_s: float = 0.0
    decode_per_seq_s: float = 0.0
    # Prefix cache: LRU capacity in block hashes (0 disables prefix caching).
    prefix_cache_blocks: int = 4096
    # When KV blocks run out during decode, preempt the youngest running request (vLLM V1
    # recompute). When False, admission reserves blocks for prompt + whole answer instead.
    preemption: bool = True
    # Longest prompt + answer accepted (longer prompts get vLLM's 400 error).
    max_model_len: int = 32768
    # Accepted model names; empty accepts any name. /v1/models lists them ("sim-model" if empty).
    served_model_names: list[str] = field(default_factory=list)
    # Dimension of /v1/embeddings vectors.
    embedding_dim: int = 384
    # remote profile: requests / tokens per minute (sliding 60 s of simulated time), 0 = unlimited.
    rpm_limit: int = 0
    tpm_limit: int = 0
    # remote profile: fixed latency before the first token (no batching slowdown).
    remote_latency_s: float = 0.0
    # remote profile: USD per token, accumulated in stats.cost_usd (/sim/stats "cost_usd").
    price_per_input_token: float = 0.0
    price_per_output_token: float = 0.0
    # Export vllm:gpu_cache_usage_perc (and vllm:gpu_prefix_cache_*) like vLLM < 0.9
    # instead of vllm:kv_cache_usage_perc / vllm:prefix_cache_*.
    legacy_kv_metric: bool = False

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.block_size < 1 or self.kv_blocks < 1 or self.max_num_seqs < 1:
            raise ValueError("block_size, kv_blocks and max_num_seqs must be >= 1")
        if self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        self.served_model_names = list(self.served_model_names or [])

    @classmethod
    def realistic(cls, **overrides: Any) -> EngineConfig:
        """A config with the batching cost model switched on (REALISTIC values)."""
        return cls(**{**REALISTIC, **overrides})

    @property
    def model_name(self) -> str:
        """Name used in metric labels and /v1/models when no name is configured."""
        return self.served_model_names[0] if self.served_model_names else "sim-model"

    @property
    def is_remote(self) -> bool:
        return self.profile == "remote"

    @property
    def instant(self) -> bool:
        """True when no simulated duration is set: requests take the zero-cost path."""
        return not (
            self.ttft_s or self.itl_s or self.prefill_s_per_token or self.decode_base_s or self.decode_per_seq_s
        )

    @property
    def uses_scheduler(self) -> bool:
        """Continuous-batching scheduler in use (everything but remote and instant engines)."""
        return not self.is_remote and not self.instant

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
