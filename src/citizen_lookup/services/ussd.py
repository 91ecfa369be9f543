"""The USSD menu (SPEC section 7): one small state machine shared by every kind with USSD.

    menu --1..5--> ID entry --ID--> result (END)        menu --0--> help (END)

Invalid input is asked again once, then the session ends politely. A session lives in Redis
under (connection, session id) for ``ussd_session_ttl_seconds``; an expired or unknown one starts
at the menu. The result is the same :func:`services.lookup.decide` the SMS job calls (same
verification, same limits, same refusal), shown on screen or, for a connection set to ``sms``,
sent by SMS through the queue.

Whose word counts: our own session. Africa's Talking resends every input so far joined by '*'
on each step; we take as the new input only what extends the history we last saw, and a step
whose history we have already answered gets the same screen again (the gateway retried). A
history that does not extend ours restarts at the menu. So a gateway may replay, lose or rewrite
its history: it can never skip a step or smuggle an input past the menu.

Steps that arrive at once (a gateway's retries, or an attacker's copies) are taken one after
another: each step is a compare-and-set on the session in Redis, retried on the session another
step left when it loses. The result step claims the walk (the session ends) *before* the lookup
is made, so one walk gets one lookup, whatever arrives concurrently; a copy of that step that
arrives meanwhile waits for its screen (Africa's Talking) or gets the end of the session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from citizen_lookup.domain.identity import InvalidIdNumber, parse_id_number
from citizen_lookup.domain.syntax import Command, CommandKind, parse_command
from citizen_lookup.domain.text import cut_at_word
from citizen_lookup.domain.ussd import UssdRequest, UssdScreen
from citizen_lookup.models import (
    Connection,
)
from citizen_lookup.services.lookup import DecisionContext, Reply, decide, record_decision
from citizen_lookup.services.replies import Templates
from citizen_lookup.services.ussd_sessions import ENDED, ID_ENTRY, MENU, queue_sms

# Re-exported: the session store and the ids of results sent by SMS, named through this module.
from citizen_lookup.services.ussd_sessions import SessionState as SessionState
from citizen_lookup.services.ussd_sessions import UssdStore as UssdStore
from citizen_lookup.services.ussd_sessions import session_digest as session_digest
from citizen_lookup.services.ussd_sessions import ussd_message_id as ussd_message_id
from citizen_lookup.services.ussd_sessions import ussd_message_prefix as ussd_message_prefix

MAX_SCREEN_UNITS = 182  # what a USSD screen holds
MAX_INPUTS = 20  # a whole session is a handful of inputs; more is not a person typing
CHOICES: dict[str, CommandKind] = {
    "1": CommandKind.PERSONAL,
    "2": CommandKind.RESIDENCE,
    "3": CommandKind.HEALTH,
    "4": CommandKind.TAX,
    "5": CommandKind.HISTORY,
}
HELP_CHOICE = "0"

#: compare-and-set rounds one step may lose before it gives up with the busy screen; each round
#: some other step wins, so a dozen copies at once need at most a dozen
MAX_ROUNDS = 32
#: how long a copy of the result step waits for the screen of the one that makes the lookup
RESULT_WAIT_SECONDS = 3.0
_RESULT_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class UssdContext:
    """What a USSD step needs: the decision's context, the session store, the short code."""

    decision: DecisionContext
    store: UssdStore
    short_code: str


@dataclass(frozen=True)
class StepResult:
    screen: UssdScreen
    outcome: str  # for the audit: menu, ask_id, reask, help, result, invalid_end, replay, ...
    reply: Reply | None = None  # the lookup's decision, on the result step
    enqueue_inbound_id: int | None = None  # a result to send by SMS: queue this message
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Move:
    """What one step does to the session it read, before anything is written or looked up."""

    state: SessionState | None  # the session as this step leaves it (None: not this phone's)
    result: StepResult | None = None  # the answer; None when a lookup makes it
    write: bool = True  # False: the session is left as it is in Redis
    command: Command | None = None  # the lookup to make, once the walk is claimed
    await_result: bool = False  # a copy of the result step while its lookup is being made


def step(
    session: Session,
    ctx: UssdContext,
    connection: Connection,
    request: UssdRequest,
    sender: str,
    now: datetime,
) -> StepResult:
    """Answer one USSD step from ``sender`` (E.164), audit it; the caller commits.

    The session is written in Redis first (compare-and-set: see the module's docstring) and the
    audit events are appended last: an append holds the audit trail's lock until the caller
    commits, so nothing else waits behind it.
    """
    # Screens name the code to dial: the connection's own short code where it has one.
    ctx = replace(ctx, short_code=connection.short_code or ctx.short_code)
    result, state = _take_step(session, ctx, connection, request, sender, now)
    audit = ctx.decision.lookup.audit
    if result.reply is not None:
        record_decision(
            session,
            audit,
            result.reply,
            connection=connection.slug,
            channel="ussd",
            provider_message_id=request.session_id[:128],
            sender=sender,
            detail={"ussd_result": connection.ussd_result},
        )
    detail = {"step": state.steps if state else 0, **result.detail}
    _audit_step(session, ctx, connection, request, sender, result.outcome, detail)
    return result


def busy_step(
    session: Session, ctx: UssdContext, connection: Connection, request: UssdRequest, sender: str
) -> UssdScreen:
    """The answer to a step when Redis cannot be reached (sessions and limits live there, so
    no step can be answered correctly): the busy screen, audited; the caller commits."""
    _audit_step(session, ctx, connection, request, sender, "unavailable")
    short_code = connection.short_code or ctx.short_code
    return busy_screen(ctx.decision.lookup.templates, connection.language, short_code)


def _audit_step(
    session: Session,
    ctx: UssdContext,
    connection: Connection,
    request: UssdRequest,
    sender: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    ctx.decision.lookup.audit.append(
        session,
        "ussd.step",
        connection=connection.slug,
        channel="ussd",
        provider_message_id=request.session_id[:128],
        sender=sender,
        outcome=outcome,
        detail=detail,
    )


def _take_step(
    session: Session,
    ctx: UssdContext,
    connection: Connection,
    request: UssdRequest,
    sender: str,
    now: datetime,
) -> tuple[StepResult, SessionState | None]:
    """Read the session, move it on, write it back if no other step wrote it meanwhile (else
    read it again and move on from there); the answer and the session as this step left it."""
    store, slug, session_id = ctx.store, connection.slug, request.session_id
    sender_hash = ctx.decision.lookup.audit.keyed_hash(sender)
    # Expiry follows the clock the step is given; Redis's TTL removes the key on the same
    # schedule.
    expires_at = now.timestamp() + store.ttl_seconds
    for _ in range(MAX_ROUNDS):
        state, stored = store.read(slug, session_id)
        if state is not None and state.expires_at and state.expires_at <= now.timestamp():
            state = None  # expired: the same as a session Redis no longer holds
        move = _advance(ctx, connection, request, sender_hash, state)
        if move.await_result and move.state is not None:
            return _awaited_result(ctx, connection, request, move.state), move.state
        if move.state is None or not move.write:
            assert move.result is not None
            return move.result, move.state
        if move.command is None:
            assert move.result is not None
            written = replace(
                move.state,
                screen=move.result.screen.text,
                end=move.result.screen.end,
                expires_at=expires_at,
            )
            if store.swap(slug, session_id, stored, written) is None:
                continue  # another step wrote the session first: take this one from there
            return move.result, written
        # The result step: claim the walk (the session ends, its screen still empty) before the
        # lookup, so that only one step of the walk ever makes it.
        claimed = replace(move.state, screen="", end=True, expires_at=expires_at)
        claim = store.swap(slug, session_id, stored, claimed)
        if claim is None:
            continue
        result = _result(
            session, ctx, connection, request, sender, move.command, move.state.walk, now
        )
        done = replace(
            move.state, screen=result.screen.text, end=result.screen.end, expires_at=expires_at
        )
        # Written only over our own claim: if the session expired meanwhile and a new walk
        # began under the same id, that walk is left alone.
        store.swap(slug, session_id, claim, done)
        return result, done
    busy = busy_screen(ctx.decision.lookup.templates, connection.language, ctx.short_code)
    return StepResult(busy, "contended"), None


def _awaited_result(
    ctx: UssdContext, connection: Connection, request: UssdRequest, state: SessionState
) -> StepResult:
    """The screen of a result another copy of this step is looking up (a gateway's retry of a
    step in flight), once it is written; the busy screen if it takes too long."""
    deadline = time.monotonic() + RESULT_WAIT_SECONDS
    while True:
        if state.screen:
            return StepResult(UssdScreen(state.screen, state.end), "replay")
        if time.monotonic() >= deadline:
            break
        time.sleep(_RESULT_POLL_SECONDS)
        latest = ctx.store.load(connection.slug, request.session_id)
        if latest is None or latest.walk != state.walk:
            break  # expired, or a new walk under the same id: this step's result is gone
        state = latest
    busy = busy_screen(ctx.decision.lookup.templates, connection.language, ctx.short_code)
    return StepResult(busy, "result_pending")


def _advance(
    ctx: UssdContext,
    connection: Connection,
    request: UssdRequest,
    sender_hash: str,
    state: SessionState | None,
) -> _Move:
    """The step's move from ``state``: no I/O, so a step that loses the race can redo it."""
    language = connection.language
    if request.text.count("*") >= MAX_INPUTS:
        return _Move(None, _end(ctx, language, "ussd_invalid_end", "too_many_inputs"))
    if state is not None and state.sender != sender_hash:
        # Another phone's session id: never continue someone else's session, never reveal it.
        return _Move(None, _end(ctx, language, "ussd_session_invalid", "foreign_session"))
    if state is None:
        fresh = SessionState(sender=sender_hash, seen=request.text if request.cumulative else "")
        return _Move(replace(fresh, steps=1), _menu(ctx, language, "menu"))

    ended = state.state == ENDED or state.end
    state = replace(state, steps=state.steps + 1)
    if request.cumulative:
        if request.text == state.seen:  # the gateway asked again for a step we answered
            if not state.screen:  # its result is being looked up by another copy of it
                return _Move(state, write=False, await_result=True)
            replayed = StepResult(UssdScreen(state.screen, state.end), "replay")
            return _Move(state, replayed, write=False)
        if state.seen and not request.text.startswith(state.seen + "*"):
            restarted = SessionState(sender=sender_hash, seen=request.text, steps=state.steps)
            return _Move(restarted, _menu(ctx, language, "restart"))
        latest = request.text[len(state.seen) + 1 :] if state.seen else request.text
        state = replace(state, seen=request.text)
    else:
        latest = request.text
    latest = latest.strip()

    if ended:  # left as it ended (by the step that ended it, whose lookup may be under way)
        return _Move(state, _end(ctx, language, "ussd_session_ended", "ended"), write=False)
    if state.state == MENU:
        if latest in CHOICES:
            asked = replace(state, state=ID_ENTRY, choice=latest, retries=0)
            screen = UssdScreen(_render(ctx, language, "ussd_ask_id"), end=False)
            return _Move(asked, StepResult(screen, "ask_id", detail={"choice": latest}))
        if latest == HELP_CHOICE:
            return _Move(replace(state, state=ENDED), _end(ctx, language, "ussd_help", "help"))
        if state.retries >= 1:
            return _Move(
                replace(state, state=ENDED),
                _end(ctx, language, "ussd_invalid_end", "invalid_end"),
            )
        return _Move(replace(state, retries=1), _menu(ctx, language, "reask", again=True))

    # ID entry
    command = _id_command(ctx, state.choice, latest)
    if command is None:
        if state.retries >= 1:
            return _Move(
                replace(state, state=ENDED),
                _end(ctx, language, "ussd_invalid_end", "invalid_end"),
            )
        screen = UssdScreen(_render(ctx, language, "ussd_reask_id"), end=False)
        return _Move(replace(state, retries=1), StepResult(screen, "reask_id"))
    return _Move(replace(state, state=ENDED), command=command)


def _id_command(ctx: UssdContext, choice: str, entered: str) -> Command | None:
    """The lookup the entry asks for, read as tolerantly as an SMS; None if it is not an ID."""
    kind = CHOICES.get(choice)
    if kind is None or not entered:
        return None
    # The same grammar as SMS: spaces, dots and groups of digits are fine, letters are not.
    command = parse_command(f"DC {kind.value} {entered}")
    if command.id_number is None or command.kind is not kind:
        return None
    if len(command.id_number) == 12:
        lookup = ctx.decision.lookup
        try:
            parse_id_number(command.id_number, lookup.provinces, abroad_range=lookup.abroad_range)
        except InvalidIdNumber:
            return None  # a typing slip: asked again, and it is not counted as a lookup
    return command


def _result(
    session: Session,
    ctx: UssdContext,
    connection: Connection,
    request: UssdRequest,
    sender: str,
    command: Command,
    walk: str,
    now: datetime,
) -> StepResult:
    language = connection.language
    walk_id = f"{session_digest(request.session_id)[:16]}-{walk}"
    reply = decide(
        session,
        ctx.decision if connection.ussd_result == "sms" else _on_screen(ctx.decision),
        command,
        sender,
        language,
        f"ussd:{connection.slug}:{walk_id}",  # one lookup per walk, however often retried
        now,
        connection=connection.slug,
    )
    if connection.ussd_result == "sms" and reply.text:
        inbound_id = queue_sms(session, connection, sender, command, reply, walk_id, now)
        screen = UssdScreen(_render(ctx, language, "ussd_sms_result"), end=True)
        return StepResult(screen, "result_sms", reply, inbound_id)
    # Silenced (over a limit, notice already given): no SMS, but the session must still end.
    text = reply.text or _render(ctx, language, "ussd_over_limit")
    screen = UssdScreen(cut_at_word(text, MAX_SCREEN_UNITS), end=True)
    return StepResult(screen, "result", reply)


def _on_screen(decision: DecisionContext) -> DecisionContext:
    """The decision's context with replies fitted to a USSD screen (182), not to an SMS."""
    templates = decision.lookup.templates.within(MAX_SCREEN_UNITS)
    return replace(decision, lookup=replace(decision.lookup, templates=templates))


def _render(ctx: UssdContext, language: str, name: str) -> str:
    templates = ctx.decision.lookup.templates
    text = templates.within(MAX_SCREEN_UNITS).render(language, name, short_code=ctx.short_code)
    return cut_at_word(text, MAX_SCREEN_UNITS)


def _menu(ctx: UssdContext, language: str, outcome: str, *, again: bool = False) -> StepResult:
    name = "ussd_reask_menu" if again else "ussd_menu"
    return StepResult(UssdScreen(_render(ctx, language, name), end=False), outcome)


def _end(ctx: UssdContext, language: str, name: str, outcome: str) -> StepResult:
    return StepResult(UssdScreen(_render(ctx, language, name), end=True), outcome)


def busy_screen(templates: Templates, language: str, short_code: str) -> UssdScreen:
    """What the phone shows when Redis cannot be reached: try again later."""
    text = templates.within(MAX_SCREEN_UNITS).render(language, "ussd_busy", short_code=short_code)
    return UssdScreen(cut_at_word(text, MAX_SCREEN_UNITS), end=True)
