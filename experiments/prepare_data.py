"""Build a decoded-sample cache from the real benchmarks or from the synthetic generator.

Real benchmarks (lists named {C,P,S,W}-{train,val,test}.txt, paths relative to ROOT)::

    python experiments/prepare_data.py --root ROOT --lists LISTDIR --out CACHE \\
        [--size HxW] [--workers N] [--check] [--json] [--allow-missing] [--no-progress]

Synthetic benchmark::

    python experiments/prepare_data.py --synthetic --out CACHE [--seed N] [--size HxW] [--json]

Prints a table of samples per domain and split (or, with --json,
``{domain: {split: {"live", "spoof", "videos", "missing"}}}``) on stdout; notes and the list of
missing or corrupt files go to stderr. Exit status: 0 done, 1 data error (missing/corrupt files
without --allow-missing, unusable list, missing root), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from rise_dist.data.cache import CacheError
from rise_dist.data.lists import ListError
from rise_dist.data.prepare import PrepareError, Summary, prepare, usable_cores

PROG = "prepare_data"
MAX_LISTED = 20  # missing/corrupt files listed on stderr before "... and N more"


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None or int(m[1]) < 1 or int(m[2]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW with positive integers, "
                                         "e.g. 224x224")
    return int(m[1]), int(m[2])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="dataset root the list paths are relative to")
    p.add_argument("--lists", help="directory holding {C,P,S,W}-{train,val,test}.txt")
    p.add_argument("--out", help="cache directory to write (not needed with --check)")
    p.add_argument("--size", type=parse_size, help="HxW of the cached images "
                   "(default 224x224 real, 32x32 synthetic)")
    p.add_argument("--workers", type=positive_int, help=f"decoding processes "
                   f"(default: all {usable_cores()} usable cores)")
    p.add_argument("--check", action="store_true",
                   help="validate that every listed file exists and decodes; write nothing")
    p.add_argument("--allow-missing", action="store_true",
                   help="drop (and count) missing or corrupt samples instead of failing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--synthetic", action="store_true", help="write the synthetic benchmark")
    p.add_argument("--seed", type=int, help="synthetic benchmark seed")
    return p


def format_table(counts: dict, status: dict[tuple[str, str], str] | None = None) -> str:
    header = ["domain", "split", "live", "spoof", "videos", "missing"]
    rows = [[d, s, *(str(c[k]) for k in header[2:])]
            for d, splits in counts.items() for s, c in splits.items()]
    if status is not None:
        header.append("status")
        for row in rows:
            row.append(status[(row[0], row[1])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {"live", "spoof", "videos", "missing"}
    return "\n".join("  ".join(cell.rjust(w) if h in right else cell.ljust(w)
                               for cell, w, h in zip(row, widths, header, strict=True)).rstrip()
                     for row in [header, *rows])


def report(summary: Summary, as_json: bool) -> int:
    for s in summary.shards:
        if s.status == "skipped":
            print(f"{s.domain}/{s.split}: cache up to date, skipped", file=sys.stderr)
    problems = summary.problems
    if problems:
        print(f"{len(problems)} listed sample(s) missing or corrupt:", file=sys.stderr)
        for p in problems[:MAX_LISTED]:
            print(f"  {p}", file=sys.stderr)
        if len(problems) > MAX_LISTED:
            print(f"  ... and {len(problems) - MAX_LISTED} more", file=sys.stderr)
    counts = summary.counts()
    if as_json:
        print(json.dumps(counts, indent=2))
    else:
        print(format_table(counts, {(s.domain, s.split): s.status for s in summary.shards}))
    cached = sum(c["live"] + c["spoof"] for splits in counts.values() for c in splits.values())
    if problems and not cached and all(p.reason == "missing" for p in problems):
        print(f"{PROG}: none of the listed files exist under --root {summary.root}; "
              "is it the right directory?", file=sys.stderr)
    if summary.failed:
        what = ("" if summary.check else
                "; shards with missing files were not written")
        print(f"{PROG}: error: {len(problems)} listed sample(s) missing or corrupt{what} "
              "(--allow-missing drops and counts them)", file=sys.stderr)
        return 1
    if problems:
        print(f"{PROG}: dropped {len(problems)} missing or corrupt sample(s)", file=sys.stderr)
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from rise_dist.config import ConfigError, SyntheticConfig
    from rise_dist.data.synthetic import write_synthetic

    kwargs = {}
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.size is not None:  # otherwise the config's own default applies
        kwargs["size"] = args.size
    try:
        cfg = SyntheticConfig(**kwargs)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    counts = write_synthetic(args.out, cfg)
    print(json.dumps(counts, indent=2) if args.json else format_table(counts))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.synthetic:
        clash = [f for f, v in (("--root", args.root), ("--lists", args.lists),
                                ("--check", args.check), ("--allow-missing", args.allow_missing),
                                ("--workers", args.workers)) if v]
        if clash:
            parser.error(f"--synthetic does not take {', '.join(clash)}")
        if not args.out:
            parser.error("--synthetic needs --out")
    else:
        if args.seed is not None:
            parser.error("--seed is only for --synthetic")
        missing = [f for f, v in (("--root", args.root), ("--lists", args.lists)) if not v]
        if not args.out and not args.check:
            missing.append("--out")
        if missing:
            parser.error(f"missing {', '.join(missing)} (or use --synthetic)")
    try:
        if args.synthetic:
            return run_synthetic(args)
        summary = prepare(args.root, args.lists, None if args.check else args.out,
                          size=args.size or (224, 224), workers=args.workers,
                          check=args.check, allow_missing=args.allow_missing,
                          progress=not args.no_progress)
        return report(summary, args.json)
    except (ListError, PrepareError, CacheError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
