"""The tests' port helpers (tests/servers.py): a refusing port stays refusing while it is used,
even when another server asks for it; free ports are distinct from what holds a port."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servers import free_port, refusing_port


def test_a_refusing_port_refuses_and_no_server_can_take_it_meanwhile():
    with refusing_port() as port:
        # http.server sets SO_REUSEADDR (as most servers do): it still cannot bind the held port.
        with pytest.raises(OSError) as caught:
            ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
        assert caught.value.errno == errno.EADDRINUSE
        for options in ((socket.SO_REUSEADDR,), (socket.SO_REUSEPORT,)):
            with socket.socket() as other:
                for option in options:
                    other.setsockopt(socket.SOL_SOCKET, option, 1)
                with pytest.raises(OSError, match="in use"):
                    other.bind(("127.0.0.1", port))
        with pytest.raises(urllib.error.URLError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert isinstance(caught.value.reason, ConnectionRefusedError)


def test_free_port_is_not_a_held_one_and_keeps_its_neighbour_free():
    with refusing_port() as held:
        ports = {free_port() for _ in range(20)}
        assert held not in ports
        port = free_port(neighbour=10000)
        for candidate in (port, port + 10000):  # both bindable now
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", candidate))
