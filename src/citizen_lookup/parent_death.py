"""A child process that does not outlive its parent, however the parent dies.

A child that keeps running after its parent is SIGKILLed (or killed by the OOM killer) keeps the
parent's sockets and pipes open: RQ's scheduler kept a dead worker's PostgreSQL transaction
(rq_base.py), and the processes of an `audit verify` pool, blocked on a queue whose writing end
they hold themselves, waited for ever. Such a child asks the kernel to kill it when its parent
goes (``PR_SET_PDEATHSIG`` on Linux); elsewhere a thread watches for the parent going away.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

#: prctl(2) option: the signal this process gets when its parent thread ends
PR_SET_PDEATHSIG = 1
#: seconds between two looks at the parent where the kernel cannot be asked to tell us
PARENT_WATCH_EVERY = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """Be killed as soon as the process ``parent_pid`` (which started this one) ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None)  # this process's own symbols, libc's among them (no lookup)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # it died before we asked
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_WATCH_EVERY)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
