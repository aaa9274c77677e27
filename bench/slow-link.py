#!/usr/bin/env python3
"""slow-link.py - a loopback TCP proxy that behaves like a long link.

Each TCP connection is held to RATE bytes a second in each direction and
every byte arrives DELAY seconds after it was sent (20 ms each way, 25 MiB/s
per connection by default: a long link's per-stream limit; this kernel has
no netem). Buffering is bounded (a bandwidth-delay product and 1 MiB more
per direction), so a slow reader slows the writer as TCP would.

    bench/slow-link.py LISTEN_PORT TARGET_PORT [--rate MIB] [--delay-ms MS]
    [--max-seconds S]

Loopback only; stops by itself after --max-seconds (default 900)."""
import argparse
import asyncio
import time

CHUNK = 64 * 1024


async def pump(reader, writer, rate, delay):
    """Copies reader to writer: each chunk leaves `delay` after it came in,
    and no faster than `rate` bytes a second overall."""
    limit = int(rate * delay) + (1 << 20)
    queue = asyncio.Queue()
    held = 0
    room = asyncio.Event()
    room.set()

    async def read():
        nonlocal held
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return
            held += len(data)
            if held >= limit:
                room.clear()
                await room.wait()

    async def write():
        nonlocal held
        start, sent = time.monotonic(), 0
        while True:
            due, data = await queue.get()
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            # Paced: `sent` bytes may not leave before sent / rate.
            ahead = start + (sent + len(data)) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            writer.write(data)
            await writer.drain()
            sent += len(data)
            held -= len(data)
            if held < limit:
                room.set()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("listen", type=int)
    ap.add_argument("target", type=int)
    ap.add_argument("--rate", type=float, default=25.0, help="MiB/s per connection and direction")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args()
    rate, delay = args.rate * (1 << 20), args.delay_ms / 1000

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", args.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, up_w, rate, delay), pump(up_r, client_w, rate, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    async with server:
        await asyncio.sleep(args.max_seconds)


if __name__ == "__main__":
    asyncio.run(main())
