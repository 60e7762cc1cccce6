# -*- test-case-name: memux.test.test_cli -*-
"""
``python -m memux``: the ``memux`` command line (see `memux._cli`).
"""

import sys

from memux._cli import main

if __name__ == "__main__":
    sys.exit(main())
