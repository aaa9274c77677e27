"""Uploads a file through tuspy (PyPI `tuspy`), unchanged: the tus client
of Python. Prints the upload's URL as JSON.

usage: tus_py.py ENDPOINT TOKEN FILE CHUNK_SIZE [DIGEST]
"""
import json
import sys

from tusclient import client

endpoint, token, path, chunk = sys.argv[1:5]
digest = sys.argv[5] if len(sys.argv) > 5 else None
tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
uploader = tus.uploader(
    path,
    chunk_size=int(chunk),
    metadata={"digest": digest} if digest else {},
    retries=60,
    retry_delay=0.2,
)
uploader.upload()
print(json.dumps({"url": uploader.url, "offset": uploader.offset}))
