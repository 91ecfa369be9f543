"""Sending checkpoints to witnesses (C2SP tlog-witness) and keeping their cosignatures.

Each witness is configured by its key (a vkey ``name+id+base64(0x04||key)``, which carries its
name) and its URL: ``CITIZEN_LOOKUP_AUDIT_WITNESSES="<vkey> <URL>; <vkey> <URL>"`` (or one entry a
line; ``<name> <URL> <vkey>`` is accepted too, the name then must be the key's). The client POSTs
``<URL>/add-checkpoint`` with the size the witness last cosigned, an RFC 9162 consistency proof
from it, and the newest kept checkpoint; the witness answers with its cosignature, which is
checked with its key and kept (``audit_cosignatures``).

A witness that is down delays nothing but its own cosignatures: each has its own thread in the
worker, backs off, and its lag is in ``/metrics``. A witness that knows a larger tree than the
trail's newest checkpoint, or refuses the proof from the tree it cosigned, is evidence that the
trail was rolled back or rewritten: the sequencer is halted (see ``sequencer.py``).
"""

from __future__ import annotations

import base64
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.models import AuditCosignature, AuditTreeHead
from citizen_lookup.services.audit.checkpoint import CheckpointError
from citizen_lookup.services.audit.cosignature import CosignatureVerifier, split_note
from citizen_lookup.services.audit.proofs import ProofError, consistency_proof, verify_consistency
from citizen_lookup.services.audit.sequencer import SequencerGuard, latest_tree_head
from citizen_lookup.services.audit.tree import StoredTree, TreeUnavailable

log = logging.getLogger("citizen_lookup.audit.witnesses")
MAX_ANSWER = 64 * 1024


class WitnessConfigError(ValueError):
    """A witness entry that cannot be used."""


@dataclass(frozen=True)
class WitnessEndpoint:
    verifier: CosignatureVerifier
    url: str

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_witnesses(value: str) -> list[WitnessEndpoint]:
    """The witnesses of a CITIZEN_LOOKUP_AUDIT_WITNESSES value (see the module docstring)."""
    endpoints: list[WitnessEndpoint] = []
    entries = [e.strip() for line in value.splitlines() for e in line.split(";")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        tokens = entry.split()
        urls = [t for t in tokens if t.startswith(("http://", "https://"))]
        keys = [t for t in tokens if "+" in t and t not in urls]
        names = [t for t in tokens if t not in urls and t not in keys]
        if len(urls) != 1 or len(keys) != 1 or len(names) > 1:
            raise WitnessConfigError(
                f"witness entry {number} must be '<witness key> <URL>' (or '<name> <URL> <key>')"
            )
        try:
            verifier = CosignatureVerifier.from_vkey(keys[0])
        except CheckpointError as exc:
            raise WitnessConfigError(f"witness entry {number}: {exc}") from exc
        if names and names[0] != verifier.name:
            raise WitnessConfigError(
                f"witness entry {number}: the name {names[0]!r} is not its key's ({verifier.name})"
            )
        if any(e.name == verifier.name for e in endpoints):
            raise WitnessConfigError(f"witness {verifier.name} is named twice")
        endpoints.append(WitnessEndpoint(verifier, urls[0].rstrip("/")))
    return endpoints


def witness_lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key per witness, so one process at a time talks to it."""
    return 0x77697400_00000000 | zlib.crc32(name.encode())  # "wit" + crc32


@dataclass
class Outcome:
    witness: str
    status: str  # cosigned, current, down, refused, misconfigured, halted
    tree_size: int | None = None
    detail: str = ""


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0


@dataclass
class Cosigner:
    """Gets the newest kept checkpoint cosigned by each witness (see the module docstring)."""

    session_factory: sessionmaker[Session]
    endpoints: Sequence[WitnessEndpoint]
    guard: SequencerGuard
    timeout: float = 5.0
    http: requests.Session = field(default_factory=requests.Session)
    _backoff: dict[str, _Backoff] = field(default_factory=dict)

    def run_once(self, *, wait: bool = False) -> list[Outcome]:
        """One round over every witness (``wait``: ignore back-off, as a person asking does)."""
        return [self.submit(endpoint, wait=wait) for endpoint in self.endpoints]

    def submit(self, endpoint: WitnessEndpoint, *, wait: bool = False) -> Outcome:
        backoff = self._backoff.setdefault(endpoint.name, _Backoff())
        if not wait and time.monotonic() < backoff.until:
            return Outcome(endpoint.name, "down", detail="backing off")
        lock = self._take_lock(endpoint)
        if lock is False:
            return Outcome(endpoint.name, "current", detail="another process is talking to it")
        try:
            outcome = self._submit(endpoint)
        except (requests.RequestException, OSError) as exc:
            backoff.failures += 1
            backoff.until = time.monotonic() + min(60.0, 2.0**backoff.failures)
            if backoff.failures == 1:
                log.warning("witness %s unreachable (%s)", endpoint.name, type(exc).__name__)
            return Outcome(endpoint.name, "down", detail=type(exc).__name__)
        finally:
            if isinstance(lock, Session):
                lock.rollback()
                lock.close()
        if outcome.status in ("cosigned", "current"):
            backoff.failures = 0
            backoff.until = 0.0
        return outcome

    def _take_lock(self, endpoint: WitnessEndpoint) -> Session | bool:
        """On PostgreSQL, one process at a time per witness (a transaction holding an advisory
        lock, no rows); False if another holds it. On SQLite (one machine) no lock: a duplicate
        request only gets a 409 and a retry, and no transaction stays open during the call."""
        session = self.session_factory()
        if session.get_bind().dialect.name != "postgresql":
            session.close()
            return True
        locked = session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": witness_lock_key(endpoint.name)}
        )
        if not locked:
            session.rollback()
            session.close()
            return False
        return session

    def _submit(self, endpoint: WitnessEndpoint) -> Outcome:
        with self.session_factory() as session:
            latest = latest_tree_head(session)
            if latest is None:
                return Outcome(endpoint.name, "current", detail="no checkpoint yet")
            known = cosigned_size(session, endpoint)
            note, size, root = latest.note, latest.tree_size, bytes.fromhex(latest.root)
            latest_id = latest.id
        if known == size:
            return Outcome(endpoint.name, "current", size)
        old = known or 0
        for _attempt in range(3):
            proof = self._proof(old, size, root)
            if proof is None:
                return self._halt(endpoint, f"cannot prove the tree of {size} extends {old}")
            status, answer = self._post(endpoint, old, proof, note)
            if status == 200:
                return self._keep(endpoint, latest_id, note, answer, size)
            if status == 409:
                try:
                    their = int(answer.strip())
                except ValueError:
                    return Outcome(endpoint.name, "refused", detail="409 without a tree size")
                if their > size:
                    return self._halt(
                        endpoint,
                        f"witness {endpoint.name} has cosigned a tree of {their} events, larger "
                        f"than the trail's newest checkpoint ({size}): the trail was rolled back",
                    )
                if their == old:
                    return self._halt(
                        endpoint,
                        f"witness {endpoint.name} holds a different tree of {old} events than "
                        "the trail: the trail was rewritten",
                    )
                old = their
                continue
            if status == 422:
                return self._halt(
                    endpoint,
                    f"witness {endpoint.name} refused the proof that the trail extends the tree "
                    f"of {old} events it cosigned: the trail was rewritten",
                )
            if status in (403, 404):
                log.error(
                    "witness %s does not accept this log (HTTP %d): is it configured with "
                    "this log's origin and public key?",
                    endpoint.name,
                    status,
                )
                return Outcome(endpoint.name, "misconfigured", detail=f"HTTP {status}")
            raise requests.ConnectionError(f"HTTP {status}")
        return Outcome(endpoint.name, "refused", detail="the witness kept moving")

    def _proof(self, old: int, size: int, root: bytes) -> list[bytes] | None:
        if old == 0 or old == size:
            return []
        with self.session_factory() as session:
            old_head = session.scalar(select(AuditTreeHead).where(AuditTreeHead.tree_size == old))
            tree = StoredTree(session)
            try:
                proof = consistency_proof(old, size, tree.subtree)
            except TreeUnavailable:
                return None
            old_root = bytes.fromhex(old_head.root) if old_head is not None else None
        if old_root is not None:
            try:  # never send a proof we cannot check ourselves
                verify_consistency(old, size, old_root, root, proof)
            except ProofError:
                return None
        return proof

    def _post(
        self, endpoint: WitnessEndpoint, old: int, proof: list[bytes], note: str
    ) -> tuple[int, str]:
        body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        body += "\n" + note
        response = self.http.post(
            f"{endpoint.url}/add-checkpoint",
            data=body.encode(),
            timeout=self.timeout,
            allow_redirects=False,
            stream=True,
        )
        try:
            raw = response.raw.read(MAX_ANSWER + 1, decode_content=True)
        finally:
            response.close()
        return response.status_code, raw[:MAX_ANSWER].decode("utf-8", "replace")

    def _keep(
        self, endpoint: WitnessEndpoint, head_id: int, note: str, answer: str, size: int
    ) -> Outcome:
        body, _ = split_note(note)
        lines = [line for line in answer.splitlines() if line]
        try:
            found = endpoint.verifier.find(body, lines)
        except CheckpointError as exc:
            log.error("witness %s sent a bad cosignature: %s", endpoint.name, exc)
            return Outcome(endpoint.name, "refused", detail=str(exc))
        if found is None:
            return Outcome(endpoint.name, "refused", detail="no cosignature by its key")
        try:
            with self.session_factory.begin() as session:
                exists = session.scalar(
                    select(func.count())
                    .select_from(AuditCosignature)
                    .where(
                        AuditCosignature.tree_head_id == head_id,
                        AuditCosignature.witness == endpoint.name,
                        AuditCosignature.key_id == endpoint.verifier.key_id.hex(),
                    )
                )
                if not exists:
                    session.add(
                        AuditCosignature(
                            tree_head_id=head_id,
                            witness=endpoint.name,
                            key_id=endpoint.verifier.key_id.hex(),
                            line=found.line,
                            cosigned_at=found.time,
                            received_at=datetime.now(UTC),
                        )
                    )
        except IntegrityError:
            pass  # another process kept the same cosignature first
        return Outcome(endpoint.name, "cosigned", size)

    def _halt(self, endpoint: WitnessEndpoint, reason: str) -> Outcome:
        self.guard.halt(reason)
        return Outcome(endpoint.name, "halted", detail=reason)


def cosigned_size(session: Session, endpoint: WitnessEndpoint) -> int | None:
    """The largest kept checkpoint this witness has cosigned (None: none yet)."""
    size: int | None = session.scalar(
        select(func.max(AuditTreeHead.tree_size))
        .join(AuditCosignature, AuditCosignature.tree_head_id == AuditTreeHead.id)
        .where(
            AuditCosignature.witness == endpoint.name,
            AuditCosignature.key_id == endpoint.verifier.key_id.hex(),
        )
    )
    return size


def witness_lag(
    session: Session, endpoints: Sequence[WitnessEndpoint]
) -> dict[str, tuple[int, float]]:
    """Per witness: (events signed but not yet cosigned by it, seconds since the oldest
    checkpoint it has not cosigned was signed; 0 when it is up to date)."""
    latest = latest_tree_head(session)
    result: dict[str, tuple[int, float]] = {}
    if latest is None:
        return result
    now = datetime.now(UTC)
    for endpoint in endpoints:
        known = cosigned_size(session, endpoint)
        if known is not None and known >= latest.tree_size:
            result[endpoint.name] = (0, 0.0)
            continue
        waiting = session.scalar(
            select(func.min(AuditTreeHead.signed_at)).where(
                AuditTreeHead.tree_size > (known if known is not None else -1)
            )
        )
        seconds = max(0.0, (now - waiting).total_seconds()) if waiting is not None else 0.0
        result[endpoint.name] = (latest.tree_size - (known or 0), seconds)
    return result
