"""Prints the BLAKE3 hex digest of a file (or stdin with "-"), using the
`blake3` package from PyPI: an implementation independent of Amber's."""
import sys

import blake3

h = blake3.blake3()
with (sys.stdin.buffer if sys.argv[1] == "-" else open(sys.argv[1], "rb")) as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
