"""Routing policies: one file each, registered here by the name used in config (`policy = "..."`).

A new policy is one new file with a class following `policies.base.Policy` plus one line below.
A policy class may name its options model (`options_model`, policies/options.py); its constructor
takes the validated options and keyword arguments `alias` (the model alias) and `metrics`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from policies.base import Policy
from policies.least_active import LeastActive
from policies.local_first import LocalFirst
from policies.options import NoOptions
from policies.prefix_aware import PrefixAware
from policies.round_robin import RoundRobin
from policies.session_affinity import SessionAffinity
from policies.weighted import Weighted

POLICIES: dict[str, type[Policy]] = {
    "least-active": LeastActive,
    "round-robin": RoundRobin,
    "weighted": Weighted,
    "session-affinity": SessionAffinity,
    "prefix-aware": PrefixAware,
    "local-first": LocalFirst,
}


def policy_options(name: str, options: dict[str, Any] | None = None) -> BaseModel:
    """Validate a policy's options (raises pydantic.ValidationError)."""
    model: type[BaseModel] = getattr(POLICIES[name], "options_model", NoOptions)
    return model.model_validate(options or {})


def make_policy(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    alias: str = "",
    metrics: Any = None,
    weights: dict[str, float] | None = None,
) -> Policy:
    """`weights`: deployment name -> the alias's weight for it (policies that weigh read it)."""
    return POLICIES[name](policy_options(name, options), alias=alias, metrics=metrics, weights=weights or {})  # type: ignore[call-arg]
