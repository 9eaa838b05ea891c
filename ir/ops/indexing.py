"""(family under construction)"""

from __future__ import annotations


def register_ops() -> None:
    pass
