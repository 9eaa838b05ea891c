#!/usr/bin/env python3
"""Turn a `graphc bench --json` run into the README's performance section (markdown).

    python scripts/perf_table.py run.json                     # print the section
    python scripts/perf_table.py run.json --readme README.md  # replace it in the README

In the README the section lives between `<!-- perf:begin -->` and `<!-- perf:end -->`; without
those markers it is appended at the end. The section states machine, date and versions, the
anchors (copy bandwidth, numpy sgemm, the FMA peak where measured) and how contenders were
isolated, the fused-vs-unfused and vs-peer speedups (compute-bound rates also as % of the FMA
peak), the targets beside the measured values (with a note where one is unattainable even at
peak, or below the time of its memory traffic alone), kernel counts and memory-plan numbers,
compile times and allocator effects. Runs of the older schema "graphc-bench/1" (no peak, no
isolation fields) render too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphc.bench.report import markdown_report, read_json

BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"


def replace_section(text: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    """`text` with the section between `begin` and `end` replaced by `section` (appended when
    unmarked)."""
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="JSON written by graphc bench --json")
    p.add_argument("--readme", help="update this file's performance section in place")
    args = p.parse_args(argv)
    doc = read_json(args.run)
    publish(markdown_report(doc, source=Path(args.run).name), args.readme, "performance")
    return 0


def publish(section: str, readme: str | None, what: str, begin: str = BEGIN,
            end: str = END) -> None:
    """Print `section`, or with `readme` replace the README's marked `what` section by it."""
    if readme is None:
        sys.stdout.write(section)
        return
    path = Path(readme)
    path.write_text(replace_section(path.read_text() if path.exists() else "", section, begin,
                                    end))
    print(f"updated the {what} section of {path}")


if __name__ == "__main__":
    sys.exit(main())
