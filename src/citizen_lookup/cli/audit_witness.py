"""`citizen-lookup audit witness …`: run a witness (C2SP tlog-witness) of this service's trail.

Meant for the inspection authority or another agency to run, on their own machine, with their
own key and store: it needs nothing of the service's (no database, no settings), only the log's
public key (`citizen-lookup audit public-key`). A witness run by the service's own operators adds
little: they could restart it with an empty store.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import click

from citizen_lookup.cli.audit_files import log_verifier
from citizen_lookup.cli.output import clean
from citizen_lookup.services.audit.checkpoint import CheckpointError, load_private_key
from citizen_lookup.services.audit.cosignature import CosignatureSigner
from citizen_lookup.services.audit.witness import (
    Witness,
    WitnessServer,
    WitnessStore,
    WitnessStoreError,
)

KEY_HELP = "The witness's own Ed25519 private key (PEM; `citizen-lookup audit keygen -o FILE`)."


@click.group("witness")
def group() -> None:
    """A witness that cosigns this log's checkpoints (run by another authority)."""


def _signer(key: Path, name: str) -> CosignatureSigner:
    try:
        return CosignatureSigner(name, load_private_key(key, "witness key"))
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc


def _open_store(path: Path) -> WitnessStore:
    try:
        return WitnessStore(path)
    except WitnessStoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _name(store: WitnessStore, name: str | None) -> str:
    """The witness's name: given once, then kept in its store (its key id depends on it)."""
    kept = store.meta("name")
    if name is None:
        if kept is None:
            raise click.BadParameter(
                "a new witness needs a name (e.g. inspection.example.gov.vn/witness)",
                param_hint="--name",
            )
        return kept
    if kept is not None and kept != name:
        raise click.BadParameter(
            f"this store belongs to witness {clean(kept)}; a new name is a new witness "
            "(and needs a new store)",
            param_hint="--name",
        )
    return name


@group.command("serve")
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
    help=KEY_HELP,
)  # fmt: skip
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The witness's own store (an SQLite file, created if absent; never the service's "
    "database). It holds the latest checkpoint cosigned and the refused requests.",
)
@click.option(
    "--log-key",
    required=True,
    help="The log's public key: the vkey `citizen-lookup audit public-key` prints, or a file "
    "holding it. Its name is the log's origin.",
)
@click.option("--name", help="The witness's name (kept in its store after the first run).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8380, show_default=True, type=click.IntRange(0, 65535))
def serve(key: Path, store: Path, log_key: str, name: str | None, host: str, port: int) -> None:
    """Run the witness: POST /add-checkpoint as C2SP tlog-witness specifies."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kept = _open_store(store)
    witness_name = _name(kept, name)
    signer = _signer(key, witness_name)
    log_key_verifier = log_verifier(log_key, "--log-key")
    known_key = kept.meta("log_key")
    if known_key is not None and known_key != log_key_verifier.vkey():
        raise click.BadParameter(
            f"this store witnesses {clean(known_key)}; another log key needs another store",
            param_hint="--log-key",
        )
    known_witness = kept.meta("witness_key")
    if known_witness is not None and known_witness != signer.vkey():
        raise click.BadParameter(
            "this store belongs to another witness key; a new key is a new witness",
            param_hint="--key",
        )
    kept.set_meta("name", witness_name)
    kept.set_meta("log_key", log_key_verifier.vkey())
    kept.set_meta("witness_key", signer.vkey())
    witness = Witness(signer, kept, log_key_verifier)
    try:
        server = WitnessServer((host, port), witness)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = server.server_address[1]
    click.echo(
        f"witness {clean(witness_name)} listening on http://{host}:{bound}, witnessing "
        f"{clean(log_key_verifier.name)}; its key (give it to the log's operator): {signer.vkey()}",
        err=True,
    )

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        kept.close()


@group.command("public-key")
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
    help=KEY_HELP,
)  # fmt: skip
@click.option("--name", required=True, help="The witness's name.")
def public_key(key: Path, name: str) -> None:
    """Print the witness's public key (a cosignature/v1 vkey) for the log and its auditors."""
    click.echo(_signer(key, name).vkey())


@group.command("evidence")
@click.option(
    "--store", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
def evidence(store: Path) -> None:
    """Print the checkpoint the witness cosigned last and every refused request (JSON lines)."""
    kept = _open_store(store)
    try:
        for key in ("name", "witness_key", "log_key"):
            click.echo(json.dumps({key: kept.meta(key)}))
        log_key = kept.meta("log_key")
        origin = log_key.split("+", 1)[0] if log_key else ""
        seen = kept.seen(origin)
        if seen is not None:
            click.echo(
                json.dumps(
                    {
                        "cosigned": seen.tree_size,
                        "at": seen.updated_at,
                        "checkpoint": seen.checkpoint,
                    }
                )
            )
        for refused in kept.refused():
            # ASCII JSON: the request exactly as received, and nothing a terminal would act on.
            click.echo(json.dumps({"refused": refused}, ensure_ascii=True))
    finally:
        kept.close()
