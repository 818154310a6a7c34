#!/usr/bin/python3
"""Test double of QEMU 7.2's qemu-ga on a unix socket, for gafreeze's failure paths.

usage: qga-double.py SOCKET [--log FILE] [--pidfile FILE] [--frozen] [--fs-count N]
                     [--delay CMD=SECONDS]... [--hang CMD]... [--stall CMD]...
                     [--drop CMD]... [--disable CMD]... [--garbage] [--thaw-fails [N]]

Wire protocol as qemu-ga 7.2 in unix-listen mode (qemu-recipes.md section 6): requests
are a stream of JSON values with no terminator; every reply is one JSON object and a
newline, with ", " and ": " separators and non-ASCII as upper-case \\uXXXX. A byte the
JSON lexer cannot take (0xFF, 0xFE, a control character) ends the current token and
gives {"error": {"class": "GenericError", "desc": "JSON parse error, stray '...'"}};
the lexer then skips to the next structural character. The reply to
guest-sync-delimited starts with 0xFF. One client at a time; the lexer state survives a
reconnect, as in qemu-ga. Commands: guest-sync-delimited, guest-sync, guest-ping,
guest-info, guest-fsfreeze-status, guest-fsfreeze-freeze, guest-fsfreeze-freeze-list,
guest-fsfreeze-thaw. While frozen, everything but guest-ping, guest-info, guest-sync,
guest-sync-delimited, guest-fsfreeze-status and guest-fsfreeze-thaw is refused with
CommandNotFound "Command X has been disabled: the agent is in frozen state".

--log FILE         append every request received (a parsed JSON value) as one JSON line,
                   before it is acted on
--pidfile FILE     written once the socket listens (default SOCKET.pid); removed on exit
--frozen           start frozen (as a restarted agent whose guest stayed frozen)
--fs-count N       filesystems a freeze (and the following thaw) reports (default 1)
--delay CMD=S      wait S seconds before carrying out CMD and answering
--hang CMD         carry out CMD but never send its reply; later requests are answered
--stall CMD        carry out CMD, then answer nothing more (reads and logs go on)
--drop CMD         close the connection when CMD arrives, without carrying it out
--disable CMD      refuse CMD as "Command CMD has been disabled" (qemu-ga -b)
--garbage          before each guest-sync-delimited reply, send stale bytes: an old
                   reply line, junk, and an old 0xFF-delimited sync reply with id 4711
--thaw-fails [N]   the first N thaws (all if N is omitted) fail with GenericError
                   "failed to thaw /mnt: Device or resource busy" and the state stays frozen

Exits 0 on SIGTERM or SIGINT, removing the socket and the pid file.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import time

VERSION = "7.2.22"
COMMANDS = [
    "guest-sync-delimited", "guest-sync", "guest-ping", "guest-info",
    "guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
]
FROZEN_ALLOWED = {
    "guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
    "guest-fsfreeze-status", "guest-fsfreeze-thaw",
}
GARBAGE = b'{"return": 4711}\n\x00stale}{junk\n\xff{"return": 4711}\n'


def to_json(value):
    """JSON as qemu-ga writes it: Python's separators, but upper-case \\u escapes."""
    text = json.dumps(value)
    return re.sub(r'(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})',
                  lambda m: m.group(1) + "\\u" + m.group(2).upper(), text)


def error(klass, desc):
    return {"error": {"class": klass, "desc": desc}}


class ParseError(Exception):
    pass


# Lexer states. The lexer follows QEMU's json-lexer.c closely enough for the bytes a
# guest-agent client sends: strings (double- or single-quoted), numbers, lower-case
# keywords, structural characters, whitespace; anything else is an error token.
START, STRING, ESCAPE, UNICODE, NUMBER, KEYWORD, RECOVERY = range(7)
STRUCTURAL = b"{}[],:"
WHITESPACE = b" \t\r\n"


class Lexer:
    def __init__(self, emit):
        self.emit = emit  # emit(kind, text): kind is "error", "string", ... or the character
        self.state = START
        self.token = bytearray()
        self.quote = 0
        self.hex_left = 0

    def feed(self, data):
        for byte in data:
            self.feed_byte(byte)

    def fail(self):
        text = bytes(self.token)
        self.token.clear()
        self.state = RECOVERY
        self.emit("error", text)

    def finish(self, kind):
        text = bytes(self.token)
        self.token.clear()
        self.state = START
        self.emit(kind, text)

    def feed_byte(self, byte):
        while True:  # a token ended by lookahead looks at the same byte again
            state = self.state
            if state == RECOVERY:
                if byte < 0x20 or byte >= 0xFE or byte in b"\"'" or byte in STRUCTURAL:
                    self.state = START
                    continue
                return
            if state == START:
                if byte in WHITESPACE:
                    return
                self.token.append(byte)
                if byte in STRUCTURAL:
                    self.finish(chr(byte))
                elif byte in b"\"'":
                    self.quote = byte
                    self.state = STRING
                elif byte == 0x2D or 0x30 <= byte <= 0x39:
                    self.state = NUMBER
                elif 0x61 <= byte <= 0x7A:
                    self.state = KEYWORD
                else:
                    self.fail()
                return
            if state == STRING:
                self.token.append(byte)
                if byte == self.quote:
                    self.finish("string")
                elif byte == 0x5C:
                    self.state = ESCAPE
                elif byte < 0x20 or byte >= 0xFE:
                    self.fail()
                return
            if state == ESCAPE:
                self.token.append(byte)
                if byte in b"\"'\\/bfnrt":
                    self.state = STRING
                elif byte == 0x75:
                    self.state, self.hex_left = UNICODE, 4
                else:
                    self.fail()
                return
            if state == UNICODE:
                self.token.append(byte)
                if chr(byte) in "0123456789abcdefABCDEF":
                    self.hex_left -= 1
                    if self.hex_left == 0:
                        self.state = STRING
                else:
                    self.fail()
                return
            if state == NUMBER:
                if byte in b"0123456789.eE+-":
                    self.token.append(byte)
                    return
                self.finish("number")
                continue
            if state == KEYWORD:
                if 0x61 <= byte <= 0x7A:
                    self.token.append(byte)
                    return
                self.finish("keyword")
                continue


class Streamer:
    """Collects tokens until braces and brackets balance, then parses one value."""

    def __init__(self, emit):
        self.emit = emit  # emit(value, error_desc)
        self.tokens = []
        self.braces = 0
        self.brackets = 0

    def reset(self):
        self.tokens, self.braces, self.brackets = [], 0, 0

    def token(self, kind, text):
        if kind == "error":
            self.reset()
            desc = "JSON parse error, stray '%s'" % text.decode("utf-8", "replace")
            self.emit(None, desc)
            return
        self.braces += {"{": 1, "}": -1}.get(kind, 0)
        self.brackets += {"[": 1, "]": -1}.get(kind, 0)
        self.tokens.append((kind, text))
        if (self.braces > 0 or self.brackets > 0) and self.braces >= 0 and self.brackets >= 0:
            return
        tokens = self.tokens
        self.reset()
        try:
            value, rest = parse_value(tokens, 0)
            if rest != len(tokens):
                raise ParseError("expecting value")
        except ParseError as exc:
            self.emit(None, "JSON parse error, %s" % exc)
            return
        self.emit(value, None)


def parse_value(tokens, i):
    if i >= len(tokens):
        raise ParseError("expecting value")
    kind, text = tokens[i]
    if kind == "{":
        return parse_object(tokens, i + 1)
    if kind == "[":
        return parse_array(tokens, i + 1)
    if kind == "string":
        return parse_string(text), i + 1
    if kind == "number":
        try:
            return json.loads(text), i + 1
        except ValueError:
            raise ParseError("invalid number") from None
    if kind == "keyword":
        words = {b"true": True, b"false": False, b"null": None}
        if text not in words:
            raise ParseError("invalid keyword '%s'" % text.decode())
        return words[text], i + 1
    raise ParseError("expecting value")


def parse_string(text):
    if text[:1] == b"'":
        # Single-quoted: swap the quoting so Python's JSON decoder can read it.
        body = text[1:-1].replace(b"\\'", b"'").replace(b'"', b'\\"')
        text = b'"' + body + b'"'
    try:
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ParseError("invalid UTF-8 sequence in string") from None
    except ValueError:
        raise ParseError("invalid escape sequence in string") from None


def parse_object(tokens, i):
    result = {}
    if i < len(tokens) and tokens[i][0] == "}":
        return result, i + 1
    while True:
        if i >= len(tokens) or tokens[i][0] != "string":
            raise ParseError("key is not a string in object")
        key = parse_string(tokens[i][1])
        if i + 1 >= len(tokens) or tokens[i + 1][0] != ":":
            raise ParseError("missing : in object pair")
        result[key], i = parse_value(tokens, i + 2)
        if i < len(tokens) and tokens[i][0] == ",":
            i += 1
            continue
        if i < len(tokens) and tokens[i][0] == "}":
            return result, i + 1
        raise ParseError("expected separator in dict")


def parse_array(tokens, i):
    result = []
    if i < len(tokens) and tokens[i][0] == "]":
        return result, i + 1
    while True:
        value, i = parse_value(tokens, i)
        result.append(value)
        if i < len(tokens) and tokens[i][0] == ",":
            i += 1
            continue
        if i < len(tokens) and tokens[i][0] == "]":
            return result, i + 1
        raise ParseError("expected separator in list")


class Dropped(Exception):
    """The double closes the connection (--drop)."""


class Agent:
    def __init__(self, opts):
        self.opts = opts
        self.frozen = opts.frozen
        self.frozen_count = opts.fs_count if opts.frozen else 0
        self.thaw_failures = opts.thaw_fails
        self.stalled = False
        self.conn = None
        self.delimit = False
        self.log = open(opts.log, "a", encoding="utf-8") if opts.log else None
        self.streamer = Streamer(self.message)
        self.lexer = Lexer(self.streamer.token)

    def send(self, data):
        if self.stalled:
            return
        try:
            self.conn.sendall(data)
        except OSError:
            pass  # the client went away; its next connection starts afresh

    def reply(self, response):
        prefix = b""
        if self.delimit:
            self.delimit = False
            prefix = b"\xff"
        self.send(prefix + to_json(response).encode() + b"\n")

    def message(self, value, parse_error):
        if parse_error is not None:
            self.reply(error("GenericError", parse_error))
            return
        if self.log:
            self.log.write(json.dumps(value) + "\n")
            self.log.flush()
        response = self.dispatch(value)
        if response is not None:
            self.reply(response)

    def dispatch(self, request):
        if not isinstance(request, dict):
            return error("GenericError", "QMP input must be a JSON object")
        name = request.get("execute")
        if name is None:
            return error("GenericError", "QMP input lacks member 'execute'")
        if not isinstance(name, str):
            return error("GenericError", "QMP input member 'execute' must be a string")
        for key in request:
            if key not in ("execute", "arguments", "id"):
                return error("GenericError", "QMP input member '%s' is unexpected" % key)
        arguments = request.get("arguments", {})
        if not isinstance(arguments, dict):
            return error("GenericError", "QMP input member 'arguments' must be an object")

        opts = self.opts
        if name in opts.drop:
            raise Dropped()
        if name in opts.delay:
            time.sleep(opts.delay[name])
        response = self.execute(name, arguments)
        if "id" in request:
            response["id"] = request["id"]
        if name in opts.stall:
            self.stalled = True
        if name in opts.hang:
            self.delimit = False
            return None
        return response

    def execute(self, name, arguments):
        if name in self.opts.disable:
            return error("CommandNotFound", "Command %s has been disabled" % name)
        if name not in COMMANDS:
            return error("CommandNotFound", "The command %s has not been found" % name)
        if self.frozen and name not in FROZEN_ALLOWED:
            return error("CommandNotFound",
                         "Command %s has been disabled: the agent is in frozen state" % name)
        allowed = {"guest-sync-delimited": ["id"], "guest-sync": ["id"],
                   "guest-fsfreeze-freeze-list": ["mountpoints"]}.get(name, [])
        for key in arguments:
            if key not in allowed:
                return error("GenericError", "Parameter '%s' is unexpected" % key)

        if name in ("guest-sync", "guest-sync-delimited"):
            if "id" not in arguments:
                return error("GenericError", "Parameter 'id' is missing")
            if not isinstance(arguments["id"], int) or isinstance(arguments["id"], bool):
                return error("GenericError",
                             "Invalid parameter type for 'id', expected: integer")
            if name == "guest-sync-delimited":
                if self.opts.garbage:
                    self.send(GARBAGE)
                self.delimit = True
            return {"return": arguments["id"]}
        if name == "guest-ping":
            return {"return": {}}
        if name == "guest-info":
            commands = [{"enabled": self.enabled(c), "name": c, "success-response": True}
                        for c in COMMANDS]
            return {"return": {"version": VERSION, "supported_commands": commands}}
        if name == "guest-fsfreeze-status":
            return {"return": "frozen" if self.frozen else "thawed"}
        if name in ("guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list"):
            count = self.opts.fs_count
            if name == "guest-fsfreeze-freeze-list" and "mountpoints" in arguments:
                mountpoints = arguments["mountpoints"]
                if not isinstance(mountpoints, list):
                    return error("GenericError",
                                 "Invalid parameter type for 'mountpoints', expected: array")
                count = len(mountpoints)
            self.frozen, self.frozen_count = True, count
            return {"return": count}
        # guest-fsfreeze-thaw
        if not self.frozen:
            return {"return": 0}
        if self.thaw_failures != 0:
            self.thaw_failures -= 1
            return error("GenericError", "failed to thaw /mnt: Device or resource busy")
        count, self.frozen, self.frozen_count = self.frozen_count, False, 0
        return {"return": count}

    def enabled(self, name):
        if name in self.opts.disable:
            return False
        return not self.frozen or name in FROZEN_ALLOWED

    def serve(self, conn):
        self.conn = conn
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self.lexer.feed(data)
        except Dropped:
            return
        except OSError:
            return
        finally:
            conn.close()
            self.conn = None
            self.delimit = False


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="qga-double.py", add_help=True)
    parser.add_argument("socket")
    parser.add_argument("--log")
    parser.add_argument("--pidfile")
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--fs-count", type=int, default=1)
    parser.add_argument("--delay", action="append", default=[], metavar="CMD=SECONDS")
    parser.add_argument("--hang", action="append", default=[], metavar="CMD")
    parser.add_argument("--stall", action="append", default=[], metavar="CMD")
    parser.add_argument("--drop", action="append", default=[], metavar="CMD")
    parser.add_argument("--disable", action="append", default=[], metavar="CMD")
    parser.add_argument("--garbage", action="store_true")
    # -1: every thaw fails; N: the first N do.
    parser.add_argument("--thaw-fails", type=int, nargs="?", const=-1, default=0, metavar="N")
    opts = parser.parse_args(argv)
    delays = {}
    for item in opts.delay:
        name, sep, seconds = item.partition("=")
        try:
            if not sep:
                raise ValueError
            delays[name] = float(seconds)
        except ValueError:
            parser.error("--delay wants CMD=SECONDS, not %r" % item)
    opts.delay = delays
    if opts.pidfile is None:
        opts.pidfile = opts.socket + ".pid"
    return opts


def main(argv):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    agent = Agent(opts)
    try:
        os.unlink(opts.socket)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(opts.socket)
    listener.listen(8)
    try:
        tmp = opts.pidfile + ".tmp"
        with open(tmp, "w", encoding="ascii") as pidfile:
            pidfile.write("%d\n" % os.getpid())
        os.rename(tmp, opts.pidfile)
        while True:
            conn, _ = listener.accept()
            agent.serve(conn)
    finally:
        listener.close()
        for path in (opts.socket, opts.pidfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
