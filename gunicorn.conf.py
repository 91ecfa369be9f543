"""gunicorn settings read from the working directory (``gunicorn app:app`` picks this file up).

Only what makes /metrics whole: with PROMETHEUS_MULTIPROC_DIR set, a worker that exits is
marked dead so its live gauges leave the sums. Bind address, worker count and the rest stay on
the command line (see README, "Production").
"""

import os


def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from citizen_lookup.metrics import process_exited

        process_exited(worker.pid)
