"""The history reply (DC NK): the latest lookups of an ID, shown only to its owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from citizen_lookup.domain.phones import mask_msisdn
from citizen_lookup.services.citizens.records import CitizenRecord, on_read_database
from citizen_lookup.services.limits import VIETNAM
from citizen_lookup.services.replies import Templates

if TYPE_CHECKING:
    from citizen_lookup.services.lookup import LookupContext, Reply

GRANTED = ("granted", "no_record")
# Decisions that sent nothing: shown to an ID's owner as one line with a count (DC NK).
SILENCED = ("silenced", "rate_silenced")
# How many recent decisions DC NK reads to find the latest ones worth a line each.
HISTORY_SCAN = 500


def history_reply(
    session: Session,
    citizen: CitizenRecord,
    language: str,
    ctx: LookupContext,
    granted: Callable[..., Reply],
) -> Reply:
    """The latest lookups of this ID, one line each, and silenced attempts as one line.

    Attempts that got no reply (over a limit) are counted, not listed: a stranger sending many
    of them cannot push the owner's own lookups out of the few shown.
    """
    t = ctx.templates

    def read(reader: Session) -> tuple[list[Any], int, int]:
        shown: list[Any] = []
        silenced = scanned = 0
        for event in ctx.audit.lookups_of(reader, citizen.id_number, HISTORY_SCAN):
            scanned += 1
            if event.outcome in SILENCED:
                silenced += 1
            elif len(shown) < ctx.history_size:
                shown.append(event)
        return shown, silenced, scanned

    # Read whole on the replica (or, if it cannot answer, whole again on the primary).
    shown, silenced, scanned = on_read_database(session, read)
    if not shown and not silenced:
        return granted("history_none", ("lookup_history",))
    items = [history_item(event, language, t) for event in shown]
    tail = []
    if silenced:
        count = f"{silenced}+" if scanned >= HISTORY_SCAN else str(silenced)
        tail.append(t.word(language, "silenced").format(count=count))
    # Whole lines only: the oldest lookups give way until the rest fits one reply.
    for keep in range(len(items), 0, -1):
        joined = "; ".join(items[:keep] + tail)
        reply = granted("history", ("lookup_history",), items=joined)
        if joined in reply.text:
            return reply
    return granted("history", ("lookup_history",), items="; ".join(items[:1] + tail))


def history_item(event: Any, language: str, t: Templates) -> str:
    return " ".join(
        (
            event.occurred_at.astimezone(VIETNAM).strftime("%d/%m %H:%M"),
            (event.channel or "sms").upper(),
            event.sender_masked or mask_msisdn(""),
            t.word(language, "granted" if event.outcome in GRANTED else "refused"),
        )
    )
