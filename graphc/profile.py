"""Per-kernel time of a compiled graph: `graphc.compile(graph, profile=True)`, run it, then
`exe.profile()`.

The LLVM target counts time stamp counter ticks around every kernel call inside the generated
schedule function (nothing is timed from Python, so a kernel of a few microseconds is measured
as precisely as one of seconds) and calibrates ticks to seconds against the clock; the reference
target times each kernel with the clock. A `Profile` lists the kernels by time with their kind
and the graph nodes they were made from, so that a slow kernel leads back to the model:

    exe = graphc.compile(graph, target="llvm", profile=True)
    for _ in range(20):
        exe(x=x)
    print(exe.profile())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KernelTime:
    """One kernel: total seconds over the profiled runs."""

    name: str
    kind: str
    origin: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class Profile:
    """Kernel times over `runs` calls; `total_seconds` is the time of the whole calls."""

    target: str
    runs: int
    total_seconds: float
    kernels: tuple[KernelTime, ...]

    @staticmethod
    def from_data(target: str, data: dict[str, Any]) -> Profile:
        kernels = tuple(KernelTime(k["name"], k["kind"], tuple(k.get("origin", ())), float(s))
                        for k, s in zip(data["kernels"], data["seconds"], strict=True))
        return Profile(target, int(data["runs"]), float(data["total_seconds"]), kernels)

    @property
    def kernel_seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    def by_kind(self) -> dict[str, float]:
        """Seconds per kernel kind (matmul, loop, conv, ...), largest first."""
        out: dict[str, float] = {}
        for k in self.kernels:
            out[k.kind] = out.get(k.kind, 0.0) + k.seconds
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "runs": self.runs, "total_seconds": self.total_seconds,
                "kernels": [{"name": k.name, "kind": k.kind, "origin": list(k.origin),
                             "seconds": k.seconds} for k in self.kernels]}

    def table(self, top: int | None = None) -> str:
        """The kernels by time per run, largest first, as a plain-text table."""
        runs = max(self.runs, 1)
        total = self.total_seconds or self.kernel_seconds or 1.0
        rows = sorted(self.kernels, key=lambda k: -k.seconds)
        shown = rows if top is None else rows[:top]
        head = (f"{self.target}: {self.runs} run(s), {_ms(self.total_seconds / runs)} per run, "
                f"{_ms(self.kernel_seconds / runs)} in {len(self.kernels)} kernels")
        lines = [head, f"{'kernel':<10} {'kind':<8} {'per run':>10} {'share':>6}  from"]
        for k in shown:
            origin = ", ".join(k.origin[:3]) + (f" (+{len(k.origin) - 3})"
                                                if len(k.origin) > 3 else "")
            lines.append(f"{k.name:<10} {k.kind:<8} {_ms(k.seconds / runs):>10} "
                         f"{100 * k.seconds / total:5.1f}%  {origin}")
        if len(shown) < len(rows):
            rest = sum(k.seconds for k in rows[len(shown):])
            lines.append(f"{'(' + str(len(rows) - len(shown)) + ' more)':<19} "
                         f"{_ms(rest / runs):>10} {100 * rest / total:5.1f}%")
        outside = self.total_seconds - self.kernel_seconds
        if self.total_seconds and outside > 0:
            lines.append(f"{'(between kernels)':<19} {_ms(outside / runs):>10} "
                         f"{100 * outside / total:5.1f}%")
        kinds = ", ".join(f"{kind} {100 * s / total:.0f}%" for kind, s in self.by_kind().items())
        lines.append(f"by kind: {kinds}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _ms(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"
