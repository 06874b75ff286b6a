"""``HttpServer.stop``: connections the kernel accepted before the port closed get their answer;
Tornado's own server resets them. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from hearth.api.http_server import HttpServer

CLIENTS = 6


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


def read_all(sock: socket.socket) -> bytes:
    data = b""
    with sock:
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            data += chunk
    return data


def connect_then_stop(server_class: type[tornado.httpserver.HTTPServer]) -> list[bytes | str]:
    """``CLIENTS`` clients connect and send a request while the event loop is busy (so they wait
    in the accept queue), then the server stops; what each client reads back."""

    async def main() -> list[bytes | str]:
        server = server_class(tornado.web.Application([(r"/", Hello)]))
        listening = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(listening)
        port = listening[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)]
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        server.stop()  # the loop has not run since they connected: none was accepted yet
        outs = await asyncio.gather(*(asyncio.to_thread(read_all, c) for c in clients),
                                    return_exceptions=True)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port)).close()
        return [o if isinstance(o, bytes) else type(o).__name__ for o in outs]

    return asyncio.run(main())


def test_connections_waiting_to_be_accepted_are_answered_when_the_port_closes() -> None:
    outs = connect_then_stop(HttpServer)
    assert all(isinstance(o, bytes) and o.startswith(b"HTTP/1.1 200 ") and o.endswith(b"hello")
               for o in outs), outs


def test_tornados_own_server_resets_them() -> None:
    """What HttpServer mends (if Tornado ever does this itself, HttpServer can go)."""
    assert connect_then_stop(tornado.httpserver.HTTPServer) == ["ConnectionResetError"] * CLIENTS
