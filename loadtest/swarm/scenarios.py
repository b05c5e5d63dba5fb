"""Named swarm scenarios: how many agents of which kind, how they arrive, how long they talk.

An agent kind is a workload shape (all lengths in tokens, times in simulated seconds):
- `chat`: a short-chat assistant: shared system prompt + tool list, short user turns, a tool call
  every few turns, think time between turns (interactive).
- `rag`: a long-context RAG agent: each session retrieves its own documents (thousands of tokens,
  unique to the session) into the first turn, then asks follow-ups over them (interactive).
- `summarizer`: a batch summarizer: one long unique document, one or two turns, no think time,
  longer answers (priority batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class AgentKind:
    name: str
    priority: str  # "interactive" | "batch" (header x-switchyard-priority)
    turns: tuple[int, int]  # turns per session, inclusive range
    user_tokens: tuple[int, int]  # tokens of each user message
    context_tokens: tuple[int, int] = (0, 0)  # unique session context in the first turn (RAG docs)
    max_tokens: int = 128  # answer cap per call
    think_s: tuple[float, float] = (1.0, 3.0)  # pause between turns
    tool_every: int = 0  # every n-th turn starts with a tool call (0 = never)
    tool_s: tuple[float, float] = (0.2, 0.6)  # time the tool itself takes


CHAT = AgentKind("chat", "interactive", turns=(3, 6), user_tokens=(20, 80), max_tokens=64, tool_every=2)
RAG = AgentKind(
    "rag",
    "interactive",
    turns=(2, 5),
    user_tokens=(20, 60),
    context_tokens=(1500, 3500),
    max_tokens=96,
    think_s=(1.0, 4.0),
    tool_every=3,
)
SUMMARIZER = AgentKind(
    "summarizer",
    "batch",
    turns=(1, 2),
    user_tokens=(20, 40),
    context_tokens=(2500, 5000),
    max_tokens=160,
    think_s=(0.0, 0.2),
)
KINDS = {k.name: k for k in (CHAT, RAG, SUMMARIZER)}


@dataclass(frozen=True)
class Scenario:
    name: str
    agents: int
    mix: dict[str, float]  # kind name -> share of agents
    ramp_s: float  # agents start spread evenly over this many simulated seconds
    system_tokens: int = 600  # the shared system prompt
    description: str = ""
    engine: dict[str, object] = field(default_factory=dict)  # engine overrides for this scenario
    kinds: dict[str, AgentKind] = field(default_factory=lambda: dict(KINDS))

    def counts(self) -> dict[str, int]:
        """Agents per kind (at least one of each kind with a share, when there are enough agents);
        the rounding remainder goes to the largest share."""
        total = sum(self.mix.values())
        floor = 1 if self.agents >= len(self.mix) else 0
        counts = {k: max(floor, int(self.agents * share / total)) for k, share in self.mix.items()}
        biggest = max(self.mix, key=lambda k: self.mix[k])
        counts[biggest] += self.agents - sum(counts.values())
        return counts


_MIX = {"chat": 0.5, "rag": 0.35, "summarizer": 0.15}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "smoke",
            6,
            _MIX,
            ramp_s=0.2,
            system_tokens=200,
            description="CI check: 6 agents, short turns, a few seconds",
            kinds={
                "chat": replace(CHAT, turns=(2, 3), think_s=(0.05, 0.1), tool_s=(0.01, 0.02), max_tokens=12),
                "rag": replace(
                    RAG,
                    turns=(2, 2),
                    context_tokens=(200, 400),
                    think_s=(0.05, 0.1),
                    tool_s=(0.01, 0.02),
                    max_tokens=12,
                ),
                "summarizer": replace(SUMMARIZER, context_tokens=(300, 500), max_tokens=16),
            },
        ),
        Scenario("agents-10", 10, _MIX, ramp_s=2.0, description="10 agents: a light load"),
        Scenario("agents-100", 100, _MIX, ramp_s=10.0, description="100 agents: a busy 4-GPU cluster"),
        Scenario("agents-1000", 1000, _MIX, ramp_s=30.0, description="1000 agents: far past capacity (minutes)"),
        Scenario(
            "rag-heavy",
            100,
            {"chat": 0.2, "rag": 0.7, "summarizer": 0.1},
            ramp_s=10.0,
            description="100 agents, mostly long-context RAG: prefix reuse matters most",
        ),
        Scenario(
            # The agents of agents-100 (same client-side CPU), arriving faster, on engines cut to 8
            # sequences and 1,024 KV blocks (16k tokens) each: the engines, not the client, saturate.
            "overload",
            100,
            _MIX,
            ramp_s=4.0,
            description="agents-100 arriving in 4 s on engines cut to 8 sequences / 1024 KV blocks each",
            engine={"max_num_seqs": 8, "kv_blocks": 1024},
        ),
    )
}
