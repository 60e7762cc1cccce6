# -*- test-case-name: memux.test.test_attackbench -*-
"""
``python -m memux.attackbench``, kept for that command: the attack bench
is ``memux.bench.attack``.
"""

from memux.bench.attack import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
