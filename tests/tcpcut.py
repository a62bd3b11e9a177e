"""A TCP relay whose connections can all be cut at once: ``python tcpcut.py LISTEN TARGET
[IDLE [DELAY]]`` relays 127.0.0.1:LISTEN to 127.0.0.1:TARGET; on SIGUSR1 it drops every
connection and refuses new ones for one second (a network blip), then relays again. With
IDLE, a connection quiet for IDLE seconds is dropped (a firewall or load balancer's idle
timeout). With DELAY, every chunk of data waits DELAY seconds each way, in order (a slow,
far or congested link: a round trip costs at least 2 x DELAY)."""

from __future__ import annotations

import asyncio
import signal
import sys

LISTEN, TARGET = int(sys.argv[1]), int(sys.argv[2])
IDLE = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
OPEN: set[asyncio.StreamWriter] = set()
LAST: dict[asyncio.StreamWriter, float] = {}  #: client side of a pair -> its last byte


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               pair: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            LAST[pair] = asyncio.get_running_loop().time()
            if DELAY:
                await asyncio.sleep(DELAY)
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        client_w.close()
        return
    OPEN.update((client_w, server_w))
    LAST[client_w] = asyncio.get_running_loop().time()
    await asyncio.gather(pipe(client_r, server_w, client_w), pipe(server_r, client_w, client_w))


async def drop_idle() -> None:
    while IDLE:
        await asyncio.sleep(0.1)
        now = asyncio.get_running_loop().time()
        for w, last in list(LAST.items()):
            if now - last > IDLE:
                w.transport.abort()  # the relay's server side closes with it
                del LAST[w]


async def main() -> None:
    cut = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, cut.set)
    idle = asyncio.create_task(drop_idle())  # noqa: F841 - runs for the relay's life
    while True:
        server = await asyncio.start_server(relay, "127.0.0.1", LISTEN, reuse_address=True)
        print("ready", flush=True)
        await cut.wait()
        cut.clear()
        server.close()
        for w in list(OPEN):
            w.transport.abort()
        OPEN.clear()
        await asyncio.sleep(1.0)


if __name__ == "__main__":
    asyncio.run(main())
