"""The pass protocol and the explicit context object passes receive (never globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from graphc.ir.graph import Graph


@dataclass
class PassContext:
    """Options and records shared along one pipeline run.

    `verify` re-runs the verifier after every pass (tests turn it on); `log` collects one
    record per pass (name, node counts, seconds) for `graphc show --print-after-all`.
    """

    verify: bool = True
    log: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pass:
    """Base class: subclasses set `name` and implement `run`."""

    name: ClassVar[str] = "pass"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:  # pragma: no cover - abstract
        raise NotImplementedError
