"""What a decode host's frame message costs to pickle: ``ForkingPickler.dumps`` + ``pickle.loads`` (what a
``multiprocessing`` pipe does) of a list of 64 ``decodehost.HostFrame`` messages, a host's usual message,
against the same fields as a bare tuple, a NamedTuple and a slots dataclass. Prints microseconds per frame
(the best of ``--repeats`` rounds of ``--rounds`` lists each).

    python experiments/message_cost.py
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
import platform
import sys
import time
from multiprocessing.reduction import ForkingPickler
from typing import NamedTuple

from posefuse.runners.sources.decodehost import HostFrame

FIELDS = [f.name for f in dataclasses.fields(HostFrame)]
AsNamedTuple = NamedTuple("AsNamedTuple", [(n, object) for n in FIELDS])
AsSlots = dataclasses.make_dataclass("AsSlots", FIELDS, slots=True)
AsSlots.__module__ = __name__  # where pickle finds it
KINDS = {"bare tuple": lambda *a: a, "NamedTuple": AsNamedTuple, "slots dataclass": AsSlots,
         "dataclass (decodehost.HostFrame)": HostFrame}


def cost_us(make, rounds: int, repeats: int) -> float:
    """Microseconds per frame to pickle and unpickle a list of 64 frame messages made by ``make``."""
    msgs = [make(3, i, 1, i % 8, i / 30, False, 1000.0 + i / 30) for i in range(64)]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(rounds):
            pickle.loads(bytes(ForkingPickler.dumps(msgs)))
        best = min(best, time.perf_counter() - t)
    return best / rounds / len(msgs) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"Python {sys.version.split()[0]}, {platform.processor() or platform.machine()}")
    for name, make in KINDS.items():
        print(f"{name:34s} {cost_us(make, a.rounds, a.repeats):5.2f} us a frame")


if __name__ == "__main__":
    main()
