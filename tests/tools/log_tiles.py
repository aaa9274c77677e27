#!/usr/bin/env python3
"""Checks Amber's tlog-tiles with Python's hashlib, nothing of Amber's.

usage: log_tiles.py URL ADMIN_TOKEN

Reads the checkpoint, every level-0 hash tile and entry bundle it covers and
the higher-level tiles; checks that each leaf is SHA-256(0x00 || entry), that
each higher tile hash is the RFC 6962 hash of the 256 hashes below it, that
the root rebuilt from the leaves is the checkpoint's, that partial tiles have
width floor(size / 256**L) mod 256, and that no empty or longer tile is served.
Prints "ok SIZE" or exits 1 with the reason.
"""
import base64
import hashlib
import sys
import urllib.error
import urllib.request

url, token = sys.argv[1], sys.argv[2]


def get(path, auth=False):
    req = urllib.request.Request(url + path)
    if auth:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def fail(why):
    print(why)
    sys.exit(1)


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes):
    """RFC 6962 Merkle tree hash of a list of leaf hashes."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node(mth(hashes[:k]), mth(hashes[k:]))


def tile_path(level, n, width):
    s = "%03d" % (n % 1000)
    n //= 1000
    while n:
        s = "x%03d/%s" % (n % 1000, s)
        n //= 1000
    return "/v1/log/tile/%s/%s%s" % (level, s, "" if width == 256 else ".p/%d" % width)


status, body = get("/v1/log/checkpoint")
if status != 200:
    fail("checkpoint: %d" % status)
lines = body.decode().split("\n")
size, root = int(lines[1]), base64.b64decode(lines[2])

leaves = []
for n in range((size + 255) // 256):
    width = min(256, size - n * 256)
    status, tile = get(tile_path(0, n, width))
    if status != 200 or len(tile) != 32 * width:
        fail("tile 0/%d: %d, %d bytes" % (n, status, len(tile)))
    status, bundle = get(tile_path("entries", n, width), auth=True)
    if status != 200:
        fail("entries %d: %d" % (n, status))
    entries, i = [], 0
    while i < len(bundle):
        length = int.from_bytes(bundle[i:i + 2], "big")
        entries.append(bundle[i + 2:i + 2 + length])
        i += 2 + length
    if len(entries) != width:
        fail("entry bundle %d has %d entries, not %d" % (n, len(entries), width))
    for j, entry in enumerate(entries):
        leaf = hashlib.sha256(b"\x00" + entry).digest()
        if tile[32 * j:32 * j + 32] != leaf:
            fail("leaf %d is not SHA-256(0x00 || entry)" % (n * 256 + j))
        leaves.append(leaf)
    if width < 256 and get(tile_path(0, n, width + 1))[0] != 404:
        fail("a tile wider than the tree was served")

if mth(leaves) != root:
    fail("the root rebuilt from the tiles is not the checkpoint's")

# Higher levels: each hash is the tree hash of 256 hashes of the level below.
below, level = leaves, 1
while len(below) >= 256:
    count = len(below) // 256
    expected = [mth(below[i * 256:(i + 1) * 256]) for i in range(count)]
    width = (size // 256 ** level) % 256
    for n in range((count + 255) // 256):
        w = min(256, count - n * 256)
        if n == count // 256 and w != width:
            fail("level %d partial width %d, expected %d" % (level, w, width))
        status, tile = get(tile_path(level, n, w))
        if status != 200 or tile != b"".join(expected[n * 256:n * 256 + w]):
            fail("tile %d/%d is not the hashes of the level below" % (level, n))
    below, level = expected, level + 1

# No empty tile, and nothing past the tree.
for path in ["/v1/log/tile/0/000.p/0", tile_path(0, (size + 255) // 256 + 1, 1), tile_path(level, 0, 1)]:
    status, _ = get(path)
    if status != 404:
        fail("%s answered %d" % (path, status))
print("ok", size)
