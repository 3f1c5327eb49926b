"""Runs a daemon in the foreground as a child subreaper: processes it orphans (qemu, which
libvirtd double-forks) are reparented here and reaped at once. Without this, on a machine whose
PID 1 reaps late, a killed qemu stays a zombie and libvirt waits for it (a destroy takes ~2 s).
Usage: reaper.py cmd args...  (exits when cmd has exited and no child is left)"""

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("reaper: prctl(PR_SET_CHILD_SUBREAPER): errno %d" % ctypes.get_errno())
main = os.fork()
if main == 0:
    os.setsid()
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(main, signal.SIGTERM))
status = 0
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == main:
        status = os.waitstatus_to_exitcode(st)
sys.exit(status)
