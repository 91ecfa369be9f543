# citizen-lookup: web (gunicorn) by default; run workers from the same image with
#   docker run … citizen-lookup worker
# Settings come from CITIZEN_LOOKUP_* environment variables (see README.md, "Configuration"); the
# web server refuses to start without CITIZEN_LOOKUP_DATABASE_URL, CITIZEN_LOOKUP_AUDIT_KEY and
# CITIZEN_LOOKUP_CREDENTIALS_KEY, and every citizen-lookup command (the worker first) also
# without CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE, a file the image's user (uid 10001) can read
# (docker-compose.yml makes it so). Run it behind a buffering reverse proxy (README.md,
# "Security").

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY scripts/lock_digest.py ./scripts/
COPY src ./src
# Exactly the pinned, hashed releases CI ran, runtime only: requirements.lock (refreshed by
# scripts/lock) holds no test tools, which are in requirements-dev.lock. pip first: the lock's
# own pin of it, hash-checked, never whatever release is newest.
RUN python scripts/lock_digest.py --check requirements.lock \
 && python scripts/lock_digest.py --pin pip > /tmp/pip.lock \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/pip.lock \
 && /opt/venv/bin/pip install --require-hashes -r requirements.lock \
 && /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11.11-slim-bookworm
# Folders the image's user owns; a new named volume mounted on one starts with its owner and
# mode (the metrics folder; the checkpoint key's, 700, which docker-compose.yml's keygen fills).
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin citizen \
 && mkdir -p /run/citizen-lookup-metrics /var/lib/citizen-lookup/keys \
 && chown citizen /run/citizen-lookup-metrics /var/lib/citizen-lookup/keys \
 && chmod 700 /var/lib/citizen-lookup/keys
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY app.py alembic.ini gunicorn.conf.py ./
COPY config ./config
COPY migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CITIZEN_LOOKUP_HOME=/app
# By number, so a runtime that checks for a non-root user (runAsNonRoot) can tell.
USER 10001
EXPOSE 8000
# Exec (JSON) form: no shell between Docker and the check (hadolint DL3025).
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["/opt/venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# gunicorn.conf.py: threaded workers with request read deadlines, and an access log without
# query strings (providers may put a citizen's number there).
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", "app:app"]
