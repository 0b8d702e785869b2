"""python -m bench [NAME ...] [--list] [-- ARGS]: run the benchmarks (every bench/<name>.py that has
a main(argv), except eval_* and _private modules), one after another with their default settings, or
the named ones; ARGS after `--` go to each. Exits non-zero if any benchmark failed."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import bench

SKIP_PREFIXES = ("_", "eval_")


def discover() -> list[str]:
    """Names of the benchmark modules in this folder, sorted."""
    names = []
    for module in pkgutil.iter_modules([str(Path(bench.__file__).parent)]):
        if module.ispkg or module.name.startswith(SKIP_PREFIXES):
            continue
        names.append(module.name)
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; available: {', '.join(available)}")
    failed = []
    for name in args.names or available:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            print(f"== bench.{name}: no main(argv), skipped", file=sys.stderr)
            continue
        print(f"== bench.{name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            rc = entry(list(passthrough))
        except SystemExit as exc:  # argparse errors and explicit exits
            rc = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            rc = 1
        print(f"== bench.{name}: exit {rc or 0} after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
