"""RQ's scheduler process, made to die with the worker that forked it.

RQ forks its scheduler (a process of its own that moves due retries to their queues) from the
worker, at start and whenever it is started again (after a lost Redis connection, or when the
worker starts serving a new queue). A fork inherits every socket the worker holds at that moment:
its database connections (one of them may be in a transaction, holding a message's row locked by a
claim) and its Redis connections (one may be blocked in a BLPOP). RQ leaves the scheduler running
when its worker is SIGKILLed, and a socket closes only when the last process holding it lets go:

* PostgreSQL saw no disconnection, so the killed worker's transaction stayed open and its row lock
  held as long as the scheduler lived; the job run again for that message (by the sweeper, then by
  its lease) waited on the lock for ever, and the message was never answered;
* Redis saw no disconnection either: a job pushed to a queue the dead worker was blocked on would
  have been handed to it;
* the scheduler kept its locks, so no live worker's scheduler could take them over.

Here the scheduler asks the kernel to kill it when its parent goes (``PR_SET_PDEATHSIG`` on Linux;
elsewhere a thread that watches for the parent going away), so the worker's sockets close when the
worker dies, however it dies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from multiprocessing import get_context
from multiprocessing.process import BaseProcess

from rq.scheduler import RQScheduler
from rq.scheduler import run as run_scheduler

#: prctl(2) option: the signal this process gets when its parent thread ends
PR_SET_PDEATHSIG = 1
#: seconds between two looks at the parent where the kernel cannot be asked to tell us
PARENT_WATCH_EVERY = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Be killed as soon as the process ``parent_pid`` (which forked this one) ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # it died before we asked
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_WATCH_EVERY)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run(scheduler: RQScheduler, parent_pid: int) -> None:
    _exit_with_parent(parent_pid)
    run_scheduler(scheduler)  # type: ignore[no-untyped-call]


class Scheduler(RQScheduler):
    """RQ's scheduler, in a process that does not outlive its worker (see the module docstring)."""

    def start(self) -> BaseProcess:
        self._status = self.Status.STARTED
        self._connection = None  # the child opens its own (RQ's own start does the same)
        process = get_context("fork").Process(
            target=_run, args=(self, os.getpid()), name="Scheduler"
        )
        process.start()
        self._process = process  # type: ignore[assignment]
        return process
