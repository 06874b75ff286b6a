"""The api's HTTP server: Tornado's, except that closing the port answers every connection the
kernel has already accepted instead of resetting it."""

from __future__ import annotations

import tornado.httpserver


class HttpServer(tornado.httpserver.HTTPServer):
    """``stop`` first takes every connection waiting in the listening sockets' accept queues.

    The kernel completes a client's handshake before the server calls ``accept``. Closing a
    listening socket resets every connection still in its queue, so a client that connected in
    the last moment before shutdown saw "connection reset" after sending its request, where it
    should get the server's answer (503 shutting_down while draining). Taking the queue and
    closing happen in one step, with no wait between them; a client that connects after it is
    refused, as for any closed port.
    """

    def stop(self) -> None:
        if not self._stopped:
            for sock in self._sockets.values():
                while True:
                    try:
                        connection, address = sock.accept()
                    except BlockingIOError:
                        break
                    except ConnectionAbortedError:
                        continue
                    self._handle_connection(connection, address)  # as Tornado's accept handler
        super().stop()
