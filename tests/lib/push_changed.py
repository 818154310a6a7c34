"""Pushes into an NBD export what QEMU's backup job with sync=bitmap pushes: every 64 KiB
cluster of NEW that differs from OLD, whole (the device's last one may be shorter), an all-zero
one as WRITE_ZEROES, each exactly once; with OLD given as "-", every cluster (a full backup).

    push_changed.py OLD|- NEW URI

Prints the number of clusters pushed."""
import sys

import nbd

CLUSTER = 65536


def main():
    old_path, new_path, uri = sys.argv[1:]
    new = open(new_path, "rb").read()
    old = None if old_path == "-" else open(old_path, "rb").read()
    h = nbd.NBD()
    h.connect_uri(uri)
    if h.get_size() != len(new):
        sys.exit(f"{uri}: {h.get_size()} bytes, {new_path} {len(new)}")
    pushed = 0
    for off in range(0, len(new), CLUSTER):
        chunk = new[off:off + CLUSTER]
        if old is not None and old[off:off + CLUSTER] == chunk:
            continue
        if chunk.count(0) == len(chunk):
            h.zero(len(chunk), off)
        else:
            h.pwrite(chunk, off)
        pushed += 1
    h.flush()
    h.shutdown()
    print(pushed)


main()
