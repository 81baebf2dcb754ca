"""Where the threads of a profiled run spend their samples: py-spy's collapsed stacks (``record --format raw
--threads --idle [--subprocesses]``, as serve_bench's --profile-dir writes them) summed per process and thread.

    python experiments/stacks.py logs/serve_profile_start.txt [--top 8] [--match posefuse] [--merge]

For each thread (its process's command shortened, the thread's name): its share of the samples, and the
frames where its samples end (the innermost frame, or with --match the innermost frame whose file contains
that text, so a wait inside the standard library is charged to the package's line that waits).
"""
from __future__ import annotations

import argparse
import collections
import re


_PROCESS = re.compile(r'process \d+:"[^"]*";')


def parse(path: str, merge: bool = False) -> dict:
    """{(process, thread): Counter(stack tuple -> samples)} from a collapsed-stacks file (a child's stacks
    name its parents first: the innermost process is the one sampled). ``merge``: processes of one command
    and threads whose names differ only in numbers count as one."""
    out: dict = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            procs = _PROCESS.findall(stack)  # a command may hold ';': the process frames are taken whole
            frames = _PROCESS.sub("", stack).split(";")
            proc = _process(procs[-1], merge) if procs else ""
            thread = _thread(frames[0], merge) if frames[0].startswith("thread ") else ""
            out[(proc, thread)][tuple(frames[bool(thread):])] += int(n)
    return out


def _process(p: str, merge: bool) -> str:
    m = re.match(r'process (\d+):"(.*)";', p)
    if not m:
        return p
    cmd = m.group(2)
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        cmd = "spawned child"
    elif " -m " in cmd:
        cmd = cmd.split(" -m ", 1)[1].split()[0] + " " + " ".join(cmd.split(" -m ", 1)[1].split()[1:2])
    return cmd[:60] if merge else f"{m.group(1)} {cmd[:60]}"


def _thread(t: str, merge: bool) -> str:
    m = re.match(r"thread \((\w+)\): ?(.*)", t)
    name = (m.group(2) or m.group(1)) if m else t
    return re.sub(r"\d+", "N", name) if merge else name


def _where(stack: tuple, match: str | None) -> str:
    if match:
        for fr in reversed(stack):
            if match in fr:
                return fr
    return stack[-1] if stack else "?"


def summary(path: str, top: int = 8, match: str | None = None, merge: bool = False) -> str:
    threads = parse(path, merge)
    total = sum(sum(c.values()) for c in threads.values()) or 1
    lines = [f"{path}: {total} samples, {len(threads)} threads"]
    for (proc, thread), stacks in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(stacks.values())
        ends = collections.Counter()
        for st, k in stacks.items():
            ends[_where(st, match)] += k
        lines.append(f"\n{proc} | {thread}: {n} samples ({n / total:.1%} of all)")
        lines += [f"  {k / n:6.1%}  {fr}" for fr, k in ends.most_common(top)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--match", default=None, help="charge each sample to the innermost frame whose text holds this")
    ap.add_argument("--merge", action="store_true", help="one row per command and thread name (numbers ignored)")
    a = ap.parse_args(argv)
    print(summary(a.path, a.top, a.match, a.merge))


if __name__ == "__main__":
    main()
