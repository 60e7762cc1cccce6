#!/usr/bin/env python3
"""
Fuzz target: `memux._engine.MemuxEngine` fed any bytes as its peer's.

The first input byte configures the run (client or server engine, raw or
after a valid preface, how the application on top reads and replies, how
the bytes are split, a strict flood allowance); the second seeds the
splitting; the rest is the peer's byte stream.  The engine may only end the
session with a GOAWAY and SessionTerminated, never raise; its output must
decode; its buffers, queues and credit must stay within its settings.  The
checks are `memux.test.fuzzchecks.checkEngine`, which the corpus tests
(``memux.test.test_fuzzcorpus``) run on every file of ``fuzz/corpus/``.

    python fuzz/fuzz_engine.py fuzz/corpus/engine -max_total_time=300
    python fuzz/fuzz_engine.py --no-atheris --seconds 60 fuzz/corpus/engine

See fuzz/README.rst.
"""

import sys
from pathlib import Path

# Run from a checkout without installing memux.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import atheris
except ImportError:
    atheris = None

if atheris is not None and "--no-atheris" not in sys.argv:
    with atheris.instrument_imports(include=["memux"]):
        from memux.test import fuzzchecks as _fuzzchecks
else:
    from memux.test import fuzzchecks as _fuzzchecks

if __name__ == "__main__":
    sys.exit(_fuzzchecks.main(_fuzzchecks.checkEngine))
