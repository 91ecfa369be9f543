"""Reading the files an auditor hands to `audit …` commands: checkpoints, keys, proofs.

Whatever is in them (another encoding, binary, a huge file, a directory), the answer is a clear
error naming the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from citizen_lookup.cli.output import clean
from citizen_lookup.services.audit import CheckpointError, CheckpointVerifier
from citizen_lookup.services.audit.cosignature import CosignatureVerifier

MAX_FILE = 1024 * 1024


def read_text_file(path: Path, what: str) -> str:
    """The file's text; a clear error if it cannot be read or is not UTF-8 text."""
    name = clean(str(path))
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read the {what} {name}: {exc.strerror}") from exc
    if len(data) > MAX_FILE:
        raise click.ClickException(f"the {what} {name} is too large to be a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"the {what} {name} is not UTF-8 text (byte {exc.start}): is it the right file?"
        ) from exc


def _is_file(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to be a file: it is the key itself
        return False


def log_verifier(value: str, option: str = "--public-key") -> CheckpointVerifier:
    """A checkpoint verifier key given as vkey text or as a file holding it."""
    path = Path(value)
    text = read_text_file(path, "public-key file") if _is_file(path) else value
    try:
        return CheckpointVerifier.from_vkey(text)
    except CheckpointError as exc:
        where = f"{clean(value)}: " if _is_file(path) else ""
        raise click.BadParameter(f"{where}{exc}", param_hint=option) from exc


def witness_verifier(path: Path) -> CosignatureVerifier:
    """A witness's public key (a cosignature/v1 vkey) from a file, or the vkey itself."""
    text = read_text_file(path, "witness key file") if _is_file(path) else str(path)
    try:
        return CosignatureVerifier.from_vkey(text)
    except CheckpointError as exc:
        raise click.BadParameter(f"{clean(str(path))}: {exc}", param_hint="--witness-key") from exc
