"""Routing policies: one file each, registered here by the name used in config (`policy = "..."`).

A new policy is one new file with a class following `policies.base.Policy` plus one line below.
"""

from __future__ import annotations

from policies.base import Policy
from policies.least_active import LeastActive
from policies.round_robin import RoundRobin

POLICIES: dict[str, type[Policy]] = {
    "least-active": LeastActive,
    "round-robin": RoundRobin,
}


def make_policy(name: str) -> Policy:
    return POLICIES[name]()
