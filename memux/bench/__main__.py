# -*- test-case-name: memux.test.test_bench,memux.test.test_soak -*-
"""
``python -m memux.bench``: the benchmark suite (`memux.bench.suite`), or,
with ``soak`` first, the soak test (`memux.bench.soak`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from memux.bench import soak, suite

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "python -m memux.bench") -> int:
    """
    Run the benchmarks as the command line ``argv`` says, or the soak test
    for ``soak ...``; return the exit status (for the benchmarks, 0 even
    when targets are missed; non-zero when a run fails).
    """
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["soak"]:
        return soak.main(argv[1:], prog=f"{prog} soak")
    return suite.main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
