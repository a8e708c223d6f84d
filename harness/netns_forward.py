"""Reach a port inside a network namespace from the host's loopback, with no address on the host.

A socket belongs to the network namespace it was created in. The parent creates listening
sockets on the host's ``127.0.0.1`` and starts this program inside the node's namespace
(``nsenter --net=...``) with those sockets inherited: it accepts on them (host loopback) and
connects to ``ADDRESS:PORT`` from where it runs (inside the namespace). So the tests talk only to
``127.0.0.1`` and the node's addresses never leave its namespace: nothing is added to the
host's interfaces or routes.

    python harness/netns_forward.py FD=ADDRESS:PORT [FD=ADDRESS:PORT ...]

A thread per connection direction; the traffic is the API server's and etcd's health checks,
small next to what they cost the server.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):  # small TLS records, relayed as they come: Nagle would hold them ~40 ms
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def parse(spec: str) -> tuple[int, tuple[str, int]]:
    """``FD=ADDRESS:PORT`` -> (fd, (address, port))."""
    fd, _, target = spec.partition("=")
    address, _, port = target.rpartition(":")
    if not (fd.isdigit() and address and port.isdigit()):
        raise ValueError(f"expected FD=ADDRESS:PORT, got {spec!r}")
    return int(fd), (address, int(port))


def main(argv: list[str]) -> int:
    pairs = [parse(a) for a in argv]
    if not pairs:
        print(__doc__, file=sys.stderr)
        return 2
    for fd, target in pairs:
        listener = socket.socket(fileno=fd)
        threading.Thread(target=_serve, args=(listener, target), daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main(sys.argv[1:]))
