#!/usr/bin/env python3
"""Records what an NBD client sends: a proxy between the client and a server.

Usage: nbd-record.py SERVER_SOCKET OUT -- COMMAND ARGS...

Runs COMMAND with every "{}" in ARGS replaced by the path of a unix socket that forwards each
connection to SERVER_SOCKET in both directions, and writes the bytes the client sent on its
first connection to OUT (on further ones to OUT.2, OUT.3, ...). Exits with COMMAND's status,
once every connection has ended. For fuzz/seeds/nbd_server.sh.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading


def forward(src, dst, record):
    """Copies src to dst until src ends, keeping what passed in record (unless None)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record is not None:
                record += data
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def session(client, server_path, out):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(server_path)
    except OSError as e:
        print("nbd-record.py: %s: %s" % (server_path, e), file=sys.stderr)
        client.close()
        return
    sent = bytearray()
    back = threading.Thread(target=forward, args=(server, client, None))
    back.start()
    forward(client, server, sent)
    back.join()
    client.close()
    server.close()
    with open(out, "wb") as f:
        f.write(sent)


def main():
    server_path, out, dashes, *command = sys.argv[1:]
    if dashes != "--" or not command:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        proxy = os.path.join(tmp, "proxy.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(proxy)
        listener.listen(8)
        listener.settimeout(0.1)
        sessions, done = [], threading.Event()

        def accept_loop():
            while not done.is_set():
                try:
                    client, _ = listener.accept()
                except socket.timeout:
                    continue
                client.settimeout(None)
                name = out if not sessions else "%s.%d" % (out, len(sessions) + 1)
                t = threading.Thread(target=session, args=(client, server_path, name))
                t.start()
                sessions.append(t)

        acceptor = threading.Thread(target=accept_loop)
        acceptor.start()
        status = subprocess.call([a.replace("{}", proxy) for a in command])
        done.set()
        acceptor.join()
        for t in sessions:
            t.join()
        listener.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
