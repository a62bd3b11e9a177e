"""A TCP proxy in front of a real Redis that freezes at one exact command: from the first
client packet matching a pattern, it forwards nothing more on any connection but keeps
accepting them — a Redis that answers nothing, as SIGSTOP leaves it, but at a chosen
step of a run rather than at a chosen time."""

from __future__ import annotations

import re
import select
import socket
import threading


class FreezeProxy:
    def __init__(self, target_port: int, freeze_on: bytes) -> None:
        self.target_port = target_port
        self.pattern = re.compile(freeze_on)
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._socks: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and self.pattern.search(data):
                        self.frozen.set()
                    if not self.frozen.is_set():
                        peer[sock].sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        for sock in self._socks:
            try:
                sock.close()
            except OSError:
                pass
