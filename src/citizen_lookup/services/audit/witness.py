"""A witness (C2SP tlog-witness): cosigns the log's checkpoints only as consistent extensions.

Meant to be run by someone the log's operator does not control (the inspection authority,
another agency), on their own machine, with their own Ed25519 key and their own small store: a
SQLite file that is not the service's database. For the one log it is configured with (origin
and public key) it keeps the latest checkpoint it cosigned, and for each ``add-checkpoint``
request it:

1. checks the log's signature on the checkpoint (403 if none verifies; 404 for another log);
2. checks that the request's old size is the size it cosigned last (409 with that size if not);
3. checks the RFC 9162 consistency proof from its tree to the new one (422 if it fails), or,
   for the same size, that the root is the same (409 if not);
4. stores the new checkpoint, in the same transaction that read the old one, and only then
   answers with its tlog-cosignature/v1 line.

So it never cosigns two inconsistent trees, nor a smaller tree after a larger one, across
restarts too (the store is on disk; SQLite's write transaction makes check-and-store atomic,
also between two witness processes sharing a store). A refused request whose signature is
valid is kept whole in the store as evidence of the log's misbehaviour.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from citizen_lookup.services.audit.checkpoint import CheckpointError, CheckpointVerifier
from citizen_lookup.services.audit.cosignature import CosignatureSigner, split_note
from citizen_lookup.services.audit.proofs import ProofError, verify_consistency

log = logging.getLogger("citizen_lookup.audit.witness")
MAX_REQUEST = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"


class WitnessStoreError(Exception):
    """The witness's store cannot be used."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Refusal(Answer):
    reason: str = ""  # kept with the request as evidence when set


@dataclass(frozen=True)
class Seen:
    tree_size: int
    root: bytes
    checkpoint: str
    updated_at: str


class WitnessStore:
    """The witness's own state: one SQLite file (created readable by its owner only)."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS log (
            origin TEXT PRIMARY KEY,
            tree_size INTEGER NOT NULL,
            root TEXT NOT NULL,           -- base64
            checkpoint TEXT NOT NULL,     -- the note it cosigned last, as received
            updated_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS refused (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            origin TEXT NOT NULL,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            old_size INTEGER,
            tree_size INTEGER,
            request TEXT NOT NULL         -- the whole request body: the log's signed claim
        );
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another witness process made it
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.executescript(self.SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise WitnessStoreError(f"{path} is not a witness store: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def seen(self, origin: str) -> Seen | None:
        row = self._db.execute(
            "SELECT tree_size, root, checkpoint, updated_at FROM log WHERE origin = ?", (origin,)
        ).fetchone()
        if row is None:
            return None
        return Seen(int(row[0]), base64.b64decode(row[1]), str(row[2]), str(row[3]))

    def refused(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT received_at, origin, status, reason, old_size, tree_size, request "
            "FROM refused ORDER BY id"
        ).fetchall()
        keys = ("received_at", "origin", "status", "reason", "old_size", "tree_size", "request")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def keep_refused(
        self, origin: str, status: int, reason: str, old: int | None, size: int | None, body: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO refused (received_at, origin, status, reason, old_size, tree_size, "
                "request) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), origin, status, reason, old, size, body),
            )

    def advance(
        self, origin: str, check: Callable[[Seen | None], Refusal | Seen]
    ) -> Refusal | None:
        """Run ``check(seen)`` and, if it returns a new Seen, store it, atomically: in one
        SQLite write transaction (BEGIN IMMEDIATE), under this process's lock too. ``check``
        returns a Refusal to refuse, or the Seen to store."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = check(self.seen(origin))
                if isinstance(result, Refusal):
                    self._db.execute("ROLLBACK")
                    return result
                self._db.execute(
                    "INSERT INTO log (origin, tree_size, root, checkpoint, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
                    "tree_size = excluded.tree_size, root = excluded.root, "
                    "checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                    (
                        origin,
                        result.tree_size,
                        base64.b64encode(result.root).decode(),
                        result.checkpoint,
                        result.updated_at,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_size(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or (text != "0" and text.startswith("0")):
        return None
    return int(text) if len(text) <= 19 else None


class Witness:
    """The add-checkpoint logic, apart from HTTP (see the module docstring)."""

    def __init__(
        self, signer: CosignatureSigner, store: WitnessStore, log_key: CheckpointVerifier
    ) -> None:
        self.signer = signer
        self.store = store
        self.log_key = log_key
        self.origin = log_key.name

    def add_checkpoint(self, raw: bytes) -> Answer:
        if len(raw) > MAX_REQUEST:
            return Answer(413, "request too large\n")
        try:
            request = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Answer(400, "the request is not UTF-8\n")
        head, blank, note = request.partition("\n\n")
        lines = head.split("\n")
        old = _parse_size(lines[0][4:]) if lines[0].startswith("old ") else None
        if not blank or old is None:
            return Answer(400, "the request must start with 'old <size>'\n")
        if len(lines) - 1 > MAX_PROOF_LINES:
            return Answer(400, "too many consistency proof lines\n")
        proof = []
        for line in lines[1:]:
            try:
                node = base64.b64decode(line, validate=True)
            except ValueError:
                node = b""
            if len(node) != 32:
                return Answer(400, "a consistency proof line is not a base64 SHA-256 hash\n")
            proof.append(node)
        if note.split("\n", 1)[0] != self.origin:
            return Answer(404, "unknown log\n")
        try:
            checkpoint = self.log_key.open(note)
        except CheckpointError:
            return Answer(403, "no valid signature by the log's key\n")
        if checkpoint.origin != self.origin:
            return Answer(404, "unknown log\n")

        if old > checkpoint.size:
            return self._refused(
                Refusal(400, "bad old size\n", reason="old size past the size"),
                old,
                checkpoint.size,
                request,
            )

        def check(seen: Seen | None) -> Refusal | Seen:
            known = seen.tree_size if seen is not None else 0
            if old != known:
                return Refusal(
                    409, f"{known}\n", SIZE_TYPE, f"old size {old}, but it cosigned {known} last"
                )
            if seen is not None and old == checkpoint.size:
                if checkpoint.root != seen.root:
                    return Refusal(
                        409, f"{known}\n", SIZE_TYPE, f"a second, different tree of {old} events"
                    )
            elif seen is not None and old > 0:
                try:
                    verify_consistency(old, checkpoint.size, seen.root, checkpoint.root, proof)
                except ProofError as exc:
                    return Refusal(422, "bad consistency proof\n", reason=f"the proof: {exc}")
            elif proof:
                return Refusal(400, "a proof from the empty tree must be empty\n", reason="")
            return Seen(checkpoint.size, checkpoint.root, note, _now())

        refused = self.store.advance(self.origin, check)
        if refused is not None:
            return self._refused(refused, old, checkpoint.size, request)
        body, _ = split_note(note)
        cosignature = self.signer.cosign(body)
        log.info("cosigned %s at tree size %d", self.origin, checkpoint.size)
        return Answer(200, cosignature.line + "\n")

    def _refused(self, refusal: Refusal, old: int, size: int, request: str) -> Answer:
        """The log signed this request: keep it whole as evidence of what it claimed."""
        if refusal.reason:
            self.store.keep_refused(self.origin, refusal.status, refusal.reason, old, size, request)
            log.warning("refused a checkpoint of %s: %s", self.origin, refusal.reason)
        return Answer(refusal.status, refusal.body, refusal.content_type)

    def status(self) -> str:
        seen = self.store.seen(self.origin)
        lines = [f"witness {self.signer.vkey()}", f"log {self.log_key.vkey()}"]
        if seen is not None:
            lines.append(f"cosigned {seen.tree_size} at {seen.updated_at}")
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: WitnessServer
    timeout = 10  # seconds a client may take to send its request

    def do_POST(self) -> None:
        if not self.path.split("?", 1)[0].endswith("/add-checkpoint"):
            self._answer(Answer(404, "not found\n"))
            return
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if length < 0:
            self._answer(Answer(411, "Content-Length required\n"))
            return
        if length > MAX_REQUEST:
            self._answer(Answer(413, "request too large\n"))
            return
        self._answer(self.server.witness.add_checkpoint(self.rfile.read(length)))

    def do_GET(self) -> None:
        if self.path == "/":
            self._answer(Answer(200, self.server.witness.status()))
        else:
            self._answer(Answer(404, "not found\n"))

    def _answer(self, answer: Answer) -> None:
        data = answer.body.encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class WitnessServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        super().__init__(address, _Handler)
        self.witness = witness
