#!/usr/bin/env python3
"""
Fuzz target: `memux._wire.FrameDecoder` on any bytes.

Whatever the input, decoding it (whole, byte by byte, in random pieces)
yields the same prefaces and frames or stops at the same typed
ProtocolError, never another exception; the decoder holds at most one
frame or preface; every item decoded re-encodes to bytes that decode to it
again.  The checks are `memux.test.fuzzchecks.checkDecoder`, which the corpus
tests (``memux.test.test_fuzzcorpus``) run on every file of
``fuzz/corpus/``.

    python fuzz/fuzz_decoder.py fuzz/corpus/decoder -max_total_time=300
    python fuzz/fuzz_decoder.py --no-atheris --seconds 60 fuzz/corpus/decoder

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
    sys.exit(_fuzzchecks.main(_fuzzchecks.checkDecoder))
