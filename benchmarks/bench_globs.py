"""Hostile globs and a hostile flops.yml (issue #16, finding 4): how long the bot is busy with them.

Run: .venv/bin/python benchmarks/bench_globs.py [--runs N]

1. Matching: 3,000 changed paths (255-character names, the longest git allows on most file systems,
   deep directories) against each of the worst patterns flops.yml allows (256 characters, every
   `*`, `?`, `[...]` and `**` the matcher has), through `ImageConfig.matches` as a push does. The
   slowest must stay under 50 ms. The former matcher (one backtracking regex per pattern, kept
   below as `old_regex`) is timed on the classic `a*a*a*a*a*a*a*a*b` at growing name lengths, for a
   same-run ratio; it is exponential in the number of stars, so it is stopped at 24 characters.
   (`re` with atomic groups instead, tried first, still took 200 ms on `*aaa…ab*`: naive substring
   search is length x length; RE2 is linear in the path whatever the pattern.)
2. Validation: a hostile 1 MB flops.yml is refused by its size (MAX_BYTES) before it is parsed;
   and, with that limit lifted, the same 1 MB (100 images of 100 patterns of 256 characters, a
   20,000-entry `branches` list full of duplicates, an alias bomb) is validated in full, which
   must stay under 1 s. Then a 256 KiB file of the same kind (the largest accepted) through the
   libyaml loader and through PyYAML's pure-Python one, for the ratio.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core import config
from bot.core.config import loading, paths
from bot.core.config.paths import MAX_PATTERN_LENGTH, MAX_PATTERNS, path_matches

MATCH_TARGET_MS = 50.0
VALIDATE_TARGET_S = 1.0


def _fit(unit: str) -> str:
    return (unit * (MAX_PATTERN_LENGTH // len(unit) + 1))[: MAX_PATTERN_LENGTH - 1] + "b"


WORST_PATTERNS = {
    "a*a*…b": _fit("a*"),
    "?*?*…b": _fit("?*"),
    "[a]*[a]*…b": _fit("[a]*"),
    "*a?*a?…b": _fit("*a?"),
    "**/a*/**/a*/…b": _fit("**/a*/"),
    "**/**/…b": _fit("**/"),
    "a/*/a/*/…b": _fit("a/*/"),
    "*aaa…ab*": "*" + "a" * 127 + "b*",
    "*[ab][ab]…c*": "*" + "[ab]" * 60 + "c*",
    "*a???…?b": "*a" + "?" * 253 + "b",
}


def changed_paths(n: int = 3000) -> list[str]:
    """Names of 255 `a`s (each pattern above almost matches them), some twelve directories deep."""
    return [("a/" * (i % 12)) + "a" * 250 + f"{i:05d}" for i in range(n)]


def time_best(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def old_regex(pattern: str) -> re.Pattern[str]:
    """The matcher before issue #16: the same translation, run by the stdlib `re` (backtracks)."""
    return re.compile(paths.glob_regex(pattern), re.DOTALL)


def bench_matching(runs: int) -> float:
    paths = changed_paths()
    print(f"matching {len(paths)} changed paths (255-character names) against one {MAX_PATTERN_LENGTH}-character "
          f"pattern, best of {runs}:")
    worst = 0.0
    for label, pattern in WORST_PATTERNS.items():
        image = config.ImageConfig("server", "Dockerfile", paths=(pattern,))
        assert not image.matches(paths), label
        seconds = time_best(lambda: image.matches(paths), runs)
        worst = max(worst, seconds)
        print(f"  {label:<18} {seconds * 1000:8.2f} ms")
    verdict = "ok" if worst * 1000 < MATCH_TARGET_MS else "TOO SLOW"
    print(f"  worst: {worst * 1000:.2f} ms (target < {MATCH_TARGET_MS:.0f} ms): {verdict}")
    print("same-run ratio on `a*a*a*a*a*a*a*a*b` against one name of n `a`s (no match):")
    pattern = "a*a*a*a*a*a*a*a*b"
    regex = old_regex(pattern)
    for n in (12, 16, 20, 24):
        name = "a" * n
        old = time_best(lambda: regex.fullmatch(name), 1)
        new = time_best(lambda: path_matches(pattern, name), max(runs, 3))
        print(f"  n={n:<3} old {old * 1000:10.2f} ms   new {new * 1000:8.4f} ms   ratio {old / new:10.0f}x")
    return worst


def hostile_yaml(size: int) -> str:
    """About `size` bytes of flops.yml that passes YAML parsing and makes validation work hard."""
    lines = ["version: 1", "registry: harbor.example.com/flops",
             "bomb: &b0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"bomb{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]" for i in range(1, 7)]
    lines.append("branches: [" + ", ".join(f"r{i % 5000}" for i in range(20_000)) + "]")
    lines.append("tags: [" + ", ".join(f'"{_fit("v*")}"' for _ in range(MAX_PATTERNS)) + "]")
    lines.append("images:")
    i = 0
    while sum(len(line) + 1 for line in lines) < size:
        lines += [f"  - name: img{i}", "    dockerfile: Dockerfile", "    paths:"]
        lines += [f"      - \"{_fit('a*')[:-4]}{j:03d}b\"" for j in range(MAX_PATTERNS)]
        i += 1
    return "\n".join(lines) + "\n"


def validate(text: str) -> int:
    try:
        config.parse(text)
    except config.ConfigError as error:
        return len(error.problems)
    return 0


def bench_validation(runs: int) -> float:
    big = hostile_yaml(1024 * 1024)
    refused = time_best(lambda: validate(big), runs)
    print(f"hostile flops.yml of {len(big) / 1e6:.2f} MB: refused by size in {refused * 1000:.2f} ms")
    limit = loading.MAX_BYTES
    loading.MAX_BYTES = 10 * 1024 * 1024
    try:
        problems = validate(big)
        full = time_best(lambda: validate(big), runs)
    finally:
        loading.MAX_BYTES = limit
    verdict = "ok" if full < VALIDATE_TARGET_S else "TOO SLOW"
    print(f"  the same, size limit lifted: validated in full in {full:.3f} s, {problems} problems "
          f"(target < {VALIDATE_TARGET_S:.0f} s): {verdict}")
    largest = hostile_yaml(limit - 40 * 1024)
    assert len(largest.encode()) <= limit
    c_loader = time_best(lambda: validate(largest), runs)
    loading._Loader = yaml.SafeLoader
    try:
        pure = time_best(lambda: validate(largest), 1)
    finally:
        loading._Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    print(f"largest accepted hostile file ({len(largest) // 1024} KiB): libyaml {c_loader:.3f} s, pure-Python "
          f"loader {pure:.3f} s (ratio {pure / c_loader:.1f}x)")
    return full


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    worst = bench_matching(args.runs)
    full = bench_validation(args.runs)
    ok = worst * 1000 < MATCH_TARGET_MS and full < VALIDATE_TARGET_S
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
