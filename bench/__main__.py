"""`python -m bench train|infer|baseline|dashboard|stress|save [options]`: one side-by-side run."""
from __future__ import annotations

import importlib
import sys

BENCHES = {
    "train": "bench.train",
    "infer": "bench.infer",
    "baseline": "bench.baseline",
    "dashboard": "bench.dashboard",
    "stress": "bench.stress",
    "save": "bench.save",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the named benchmark's main(argv); imported lazily (torch is slow to load).

    Args:
        argv: the command line without the program name; sys.argv[1:] when None.

    Returns:
        The benchmark's exit code; 2 for an unknown or missing name.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES:
        found = repr(argv[0]) if argv else "nothing"
        print(f"expected a benchmark name, one of {', '.join(BENCHES)}; found {found}. "
              f"Run `python -m bench NAME --help` for its options.", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
