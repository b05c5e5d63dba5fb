"""Deterministic made-up content for agents: the shared system prompt and tools, per-session
documents, user messages. Token counts follow the simulated engine (one token per 4 bytes), so a
prompt of N "tokens" here is about N tokens there."""

from __future__ import annotations

import random
from typing import Any

_WORDS = (
    "gateway agent engine token cache prefix batch queue latency model route policy session tool "
    "report invoice order customer shipment ticket region cluster node replica metric budget team "
    "search index vector document answer summary context window memory schedule priority retry "
    "alpha beta gamma delta omega north south east west amber cobalt silver granite harbor meadow"
).split()


def text(rng: random.Random, tokens: int) -> str:
    """About `tokens` tokens of words (4 bytes per token)."""
    out: list[str] = []
    size = 0
    target = tokens * 4
    while size < target:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def system_prompt(tokens: int) -> str:
    """The system prompt every agent shares (same bytes for all: a shared prefix)."""
    return "You are a helpful operations agent. Follow the policy below.\n" + text(random.Random(7), tokens)


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the knowledge base.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_ticket",
            "description": "Fetch a support ticket by id.",
            "parameters": {
                "type": "object",
                "properties": {"ticket_id": {"type": "string"}},
                "required": ["ticket_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_query",
            "description": "Run a read-only SQL query on the orders database.",
            "parameters": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]},
        },
    },
]


def tool_result(rng: random.Random) -> str:
    return '{"status": "ok", "rows": "' + text(rng, 40) + '"}'
