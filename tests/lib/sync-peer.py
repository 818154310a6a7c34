#!/usr/bin/python3
"""The other side of qmpctl --sync-fd (gafreeze hold's side of the ready/go handshake).

usage: sync-peer.py LOG FD STEP... -- COMMAND [ARG...]

Runs COMMAND with one end of a unix stream socket pair as its descriptor FD, then carries
out the STEPs in order on the other end, logging each outcome as one line to LOG:
  read        waits up to 10 s for one line from COMMAND: logs "read LINE", or "read EOF"
  say:WORD    writes WORD and a newline: logs "said WORD"
  close       closes our end: logs "closed"
  sh:COMMAND  runs a shell command: logs "sh " and its standard output, one line
Then waits for COMMAND and exits with its status (128+N when killed by signal N).
"""

import os
import select
import socket
import subprocess
import sys


def main():
    log_path, fd = sys.argv[1], int(sys.argv[2])
    rest = sys.argv[3:]
    split = rest.index("--")
    steps, command = rest[:split], rest[split + 1:]
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(command, pass_fds=[fd],
                            preexec_fn=lambda: os.dup2(theirs.fileno(), fd))
    theirs.close()
    reader = ours.makefile("rb")
    with open(log_path, "w") as log:
        for step in steps:
            if step == "read":
                ready, _, _ = select.select([ours], [], [], 10)
                line = reader.readline() if ready else b""
                log.write("read %s\n" % (line.decode().rstrip("\n") if line else "EOF"))
            elif step.startswith("say:"):
                ours.sendall(step[4:].encode() + b"\n")
                log.write("said %s\n" % step[4:])
            elif step == "close":
                reader.close()
                ours.close()
                log.write("closed\n")
            elif step.startswith("sh:"):
                out = subprocess.run(step[3:], shell=True, capture_output=True, text=True)
                log.write("sh %s\n" % out.stdout.strip())
            log.flush()
    status = proc.wait()
    sys.exit(128 - status if status < 0 else status)


main()
