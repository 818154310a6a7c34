#!/usr/bin/python3
"""Small guest-agent client for test setup and inspection (not the tool under test).

usage: qga-client.py [--timeout SECONDS] SOCKET COMMAND [ARGUMENTS-JSON]
       qga-client.py [--timeout SECONDS] SOCKET exec PROGRAM [ARG...]
       qga-client.py [--timeout SECONDS] SOCKET raw BYTES [--lines N]

COMMAND: resynchronises (0xFF + guest-sync-delimited with a random id, skipping
everything up to the 0xFF that precedes the matching reply), sends one command and
prints its "return" value as one line of JSON. An error reply is printed to stderr
as "qga-client: CLASS: DESC" and the exit status is 1.

exec: runs PROGRAM (searched in the guest's PATH) with guest-exec, polls
guest-exec-status until it has exited, writes its decoded stdout to stdout and its
stderr to stderr, and exits with the program's exit code (128+N for a signal).

raw: sends BYTES as given, after Python escape processing (\\xff, \\n, ...), with no
resynchronisation, and prints what comes back with bytes outside printable ASCII
(other than newline) written as \\xNN and a backslash as \\\\. It stops after N
newline-terminated lines (default 1) or when nothing arrives for 1 s.

Exit status 3: the socket could not be reached or did not answer in time.
"""

import base64
import codecs
import json
import random
import socket
import sys
import time
import warnings

SYNC = 0xFF


class Timeout(Exception):
    pass


class Agent:
    def __init__(self, path, timeout):
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The chardev socket of a just-started QEMU may not exist yet.
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= self.deadline:
                    raise Timeout(f"cannot connect to {path}")
                time.sleep(0.05)

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout("no answer in time")
        return left

    def send(self, data):
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def fill(self):
        self.sock.settimeout(self.remaining())
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("no answer in time") from None
        if not chunk:
            raise Timeout("the agent closed the connection")
        self.buf += chunk

    def line(self):
        while b"\n" not in self.buf:
            self.fill()
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def sync(self):
        sync_id = random.randrange(1, 2**62)
        request = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
        self.send(bytes([SYNC]) + json.dumps(request).encode())
        while True:
            # Everything before a 0xFF is stale or the parse error the 0xFF provoked.
            while bytes([SYNC]) not in self.buf:
                self.buf = b""
                self.fill()
            self.buf = self.buf[self.buf.index(SYNC) + 1:]
            try:
                reply = json.loads(self.line())
            except ValueError:
                continue
            if reply.get("return") == sync_id:
                return

    def command(self, name, arguments=None):
        request = {"execute": name}
        if arguments is not None:
            request["arguments"] = arguments
        self.send(json.dumps(request).encode())
        return json.loads(self.line())


def fail(message, status):
    print(f"qga-client: {message}", file=sys.stderr)
    sys.exit(status)


def result(reply):
    if "error" in reply:
        error = reply["error"]
        fail(f"{error.get('class')}: {error.get('desc')}", 1)
    return reply["return"]


def run_exec(agent, argv):
    agent.sync()
    started = result(agent.command(
        "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True}))
    while True:
        status = result(agent.command("guest-exec-status", {"pid": started["pid"]}))
        if status.get("exited"):
            break
        time.sleep(0.05)
    sys.stdout.buffer.write(base64.b64decode(status.get("out-data", "")))
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(base64.b64decode(status.get("err-data", "")))
    if "signal" in status:
        return 128 + status["signal"]
    return status.get("exitcode", 1)


def escape(data):
    out = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif byte == 0x0A or 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def run_raw(agent, data, lines):
    agent.send(data)
    got = b""
    while got.count(b"\n") < lines:
        agent.sock.settimeout(min(1.0, agent.remaining()))
        try:
            chunk = agent.sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    sys.stdout.write(escape(got))
    return 0


def main(argv):
    timeout = 10.0
    if len(argv) >= 2 and argv[0] == "--timeout":
        timeout = float(argv[1])
        argv = argv[2:]
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path, command, rest = argv[0], argv[1], argv[2:]
    try:
        agent = Agent(path, timeout)
        if command == "exec":
            if not rest:
                fail("exec needs a program", 2)
            return run_exec(agent, rest)
        if command == "raw":
            if not rest:
                fail("raw needs the bytes to send", 2)
            lines = 1
            if len(rest) == 3 and rest[1] == "--lines":
                lines = int(rest[2])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "\\u" is no bytes escape: kept as is
                data = codecs.escape_decode(rest[0].encode())[0]
            return run_raw(agent, data, lines)
        arguments = json.loads(rest[0]) if rest else None
        agent.sync()
        print(json.dumps(result(agent.command(command, arguments))))
        return 0
    except Timeout as exc:
        fail(str(exc), 3)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}", 3)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
