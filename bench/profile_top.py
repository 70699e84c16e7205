"""Summarise py-spy raw profiles: where a Parley process spent its samples.

    BENCH_PYSPY_DIR=/tmp/spy .venv/bin/python -m bench.run --systems parley ...
    .venv/bin/python bench/profile_top.py /tmp/spy/bench-*-a-*.txt

Prints the functions with the most samples on top of the stack (self) and
anywhere in it (inclusive), as a share of all samples.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['fn']} ({path})"


def main() -> None:
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for arg in sys.argv[1:]:
        for line in Path(arg).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            frames = [short(f) for f in stack.split(";") if f]
            if not frames:
                continue
            total += count
            self_count[frames[-1]] += count
            for f in set(frames):
                incl[f] += count
    print(f"{total} samples")
    print("\nself:")
    for f, c in self_count.most_common(25):
        print(f"  {100 * c / total:5.1f}%  {f}")
    print("\ninclusive:")
    for f, c in incl.most_common(40):
        print(f"  {100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
