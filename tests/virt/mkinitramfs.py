"""Writes a minimal newc initramfs: the static ftpair-commission as /init, a /dev/console node and
the mount points it needs. Usage: mkinitramfs.py <ftpair-commission> <out.cpio>"""

import os
import stat
import sys


def entry(out, ino, name, mode, data=b"", rdev=(0, 0)):
    namez = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0))
    out.write(hdr.encode() + namez)
    out.write(b"\0" * ((4 - (110 + len(namez)) % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - len(data) % 4) % 4))


def main():
    init, dest = sys.argv[1], sys.argv[2]
    with open(init, "rb") as f:
        code = f.read()
    with open(dest, "wb") as out:
        ino = 1
        for d in ("dev", "proc", "sys", "run", "run/ftpair"):
            entry(out, ino, d, stat.S_IFDIR | 0o755)
            ino += 1
        entry(out, ino, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        entry(out, ino + 1, "init", stat.S_IFREG | 0o755, code)
        entry(out, ino + 2, "TRAILER!!!", 0)
    os.chmod(dest, 0o644)


if __name__ == "__main__":
    main()
