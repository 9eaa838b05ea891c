"""argparse types shared by the `graphc` subcommands."""

from __future__ import annotations

import argparse


def _int_at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")  # counts of runs, epochs, threads
non_negative_int = _int_at_least(0, "an integer >= 0")  # warm-up calls
