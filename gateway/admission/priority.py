"""A request's priority class: the key's (else its team's) default, lowered by the client with
`x-switchyard-priority: interactive | batch | background`, never raised past the key's (else team's)
ceiling `max_priority`. A request asking for more than its ceiling gets the ceiling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.admission.config import CLASSES
from gateway.errors import bad_request

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.keys import Principal

HEADER = "x-switchyard-priority"
RANK = {name: i for i, name in enumerate(CLASSES)}  # 0 = served first


class Priorities:
    def __init__(self, config: "Config") -> None:
        teams = {t.name: (t.priority, t.max_priority) for t in config.teams}
        self._keys = {k.name: (k.priority, k.max_priority) for k in config.keys}
        self._teams = teams

    def resolve(self, principal: "Principal | None", headers: Any) -> int:
        """The rank of the request's class (0 = interactive)."""
        default, ceiling = "interactive", "interactive"
        if principal is not None:
            team = self._teams.get(principal.team, (None, None))
            key = self._keys.get(principal.key_name, (None, None))
            default = key[0] or team[0] or default
            ceiling = key[1] or team[1] or ceiling
        rank = RANK[default]
        asked = headers.get(HEADER) if headers is not None else None
        if asked:
            value = asked.strip().lower()
            if value not in RANK:
                raise bad_request(
                    f"Unknown {HEADER} value {asked[:40]!r}; expected one of {', '.join(CLASSES)}.",
                    code="invalid_priority",
                )
            rank = RANK[value]
        return max(rank, RANK[ceiling])  # never above the ceiling


def class_name(rank: int) -> str:
    return CLASSES[rank]
