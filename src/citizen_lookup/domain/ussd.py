"""A USSD step and screen in our own words, whatever the gateway's format."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UssdRequest:
    """One step of a USSD session as the gateway reported it, in our own words."""

    session_id: str  # the gateway's id of the session; ours are keyed by connection too
    sender: str  # the MSISDN exactly as the gateway reported it; normalised by the caller
    service_code: str  # the code dialled, such as *8077#
    text: str
    # True when ``text`` is every input of the session so far joined by '*' (Africa's Talking);
    # False when it is only the latest input (generic).
    cumulative: bool


@dataclass(frozen=True)
class UssdScreen:
    """What the phone shows next; ``end`` closes the session."""

    text: str
    end: bool
