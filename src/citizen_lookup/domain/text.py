"""Reply text: diacritics, the GSM-7 alphabet, segment counting and fitting a reply to a limit."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence

# GSM 03.38 default alphabet, in code-point order; 0x1B (the escape to the extension table) is
# not a character of its own and is left out.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Each of these is sent as escape + character, so it costs two units.
GSM7_EXTENSION: frozenset[str] = frozenset("^{}\\[~]|€\f")
_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

GSM7_SINGLE_SEGMENT = 160
GSM7_PART = 153  # a concatenated part loses 7 units to the UDH
UCS2_SINGLE_SEGMENT = 70
UCS2_PART = 67

# Đ/đ do not decompose under NFD; Ð/ð (Icelandic eth) are a frequent stand-in for them in
# legacy Vietnamese encodings, so they get the same treatment.
_UNDECOMPOSABLE = str.maketrans({"đ": "d", "Đ": "D", "ð": "d", "Ð": "D"})

# Typographic characters that data copied from documents carries; "?" would read worse.
_TYPOGRAPHIC = {
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'",
    "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "″": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "…": "...", "•": "-", "·": ".",
}  # fmt: skip

ABBREVIATIONS: list[tuple[str, str]] = [
    ("To dan pho", "TDP"),
    ("Thanh pho", "TP"),
    ("Thi tran", "TT"),
    ("Khu pho", "KP"),
    ("Phuong", "P."),
    ("So nha", "SN"),
    ("Thi xa", "TX"),
    ("Duong", "D."),
    ("Huyen", "H."),
    ("Quan", "Q."),
    ("Tinh", "T."),
    ("Thon", "Th."),
    ("Xa", "X."),
]

_ABBREVIATION_BY_KEY = {long.casefold(): short for long, short in ABBREVIATIONS}
# In an address these words always come before a name or number ("Quan 1", "Phuong Ben Nghe"),
# so one is only shortened when a word follows: "Nguyen Van Quan" keeps the given name whole.
# Fixed alternatives in longest-first order and lookarounds instead of nested quantifiers: the
# pattern scans in linear time, and "Xanh" or "Apple" never match "Xa" or "Ap".
_ABBREVIATION_PATTERN = re.compile(
    r"(?<!\w)(?:"
    + "|".join(r"\s+".join(map(re.escape, long.split())) for long, _ in ABBREVIATIONS)
    + r")(?=\s+\w)",
    re.IGNORECASE,
)

_TRAILING_JUNK = " \t\n,;:-/"
_ELLIPSIS = "..."
_RUN_OF_DOTS = re.compile(r"\.{4,}")


class TemplateError(ValueError):
    """A reply template is malformed or names a field that was not given."""


def strip_diacritics(text: str) -> str:
    """Remove Vietnamese (and other Latin) diacritics: đ→d, then NFD without combining marks."""
    decomposed = unicodedata.normalize("NFD", text.translate(_UNDECOMPOSABLE))
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", kept)


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM-7 alphabet or its extension table."""
    return all(ch in _GSM7_ALL for ch in text)


def _units(ch: str) -> int:
    return 2 if ch in GSM7_EXTENSION else 1


def gsm7_units(text: str) -> int:
    """GSM-7 units of ``text``: extension characters count two, everything else one."""
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)


def _to_gsm7_char(ch: str) -> str:
    if ch == "\n":
        return ch
    category = unicodedata.category(ch)
    if category == "Cc" or category in ("Zs", "Zl", "Zp"):
        return " "
    if ch in _GSM7_ALL:
        return ch
    if category == "Cf":
        # Invisible formatting (zero-width space, BOM): dropping it changes nothing visible.
        return ""
    return _TYPOGRAPHIC.get(ch, "?")


def to_gsm7(text: str) -> str:
    """Convert to GSM-7: strip diacritics, blank control characters, replace the rest with '?'."""
    return "".join(_to_gsm7_char(ch) for ch in strip_diacritics(text))


def segment_count(text: str) -> int:
    """Number of SMS segments ``text`` needs: GSM-7 160/153, otherwise UCS-2 70/67."""
    if is_gsm7(text):
        units, single, part = gsm7_units(text), GSM7_SINGLE_SEGMENT, GSM7_PART
    else:
        # UCS-2 as phones actually send it is UTF-16: characters beyond the BMP take two units.
        units, single, part = len(text.encode("utf-16-le")) // 2, UCS2_SINGLE_SEGMENT, UCS2_PART
    if units <= single:
        return 1
    return math.ceil(units / part)


def max_units_for_segments(segments: int) -> int:
    """GSM-7 units available in a reply of ``segments`` segments (1 → 160, 2 → 306)."""
    if segments < 1:
        raise ValueError(f"a reply needs at least one segment, not {segments}")
    if segments == 1:
        return GSM7_SINGLE_SEGMENT
    return GSM7_PART * segments


def abbreviate(text: str) -> str:
    """Shorten address words followed by a name: 'Phuong Ben Nghe' → 'P. Ben Nghe'."""

    def short_form(match: re.Match[str]) -> str:
        return _ABBREVIATION_BY_KEY[" ".join(match.group().split()).casefold()]

    return _ABBREVIATION_PATTERN.sub(short_form, text)


def _prefix_within(text: str, max_units: int) -> str:
    used = 0
    for index, ch in enumerate(text):
        used += _units(ch)
        if used > max_units:
            return text[:index]
    return text


def cut_at_word(text: str, max_units: int, ellipsis: str = _ELLIPSIS) -> str:
    """Cut ``text`` at a word boundary and append ``ellipsis`` so it fits in ``max_units``."""
    if gsm7_units(text) <= max_units:
        return text
    budget = max_units - gsm7_units(ellipsis)
    if budget < 0:
        return _prefix_within(ellipsis, max(max_units, 0))
    used = 0
    boundary = 0
    for index, ch in enumerate(text):
        if ch.isspace():
            boundary = index  # text[:index] costs `used` units, within budget
        used += _units(ch)
        if used > budget:
            break
    # "P." cut before its name must not read "P....": the ellipsis replaces trailing dots.
    kept = text[:boundary].rstrip(_TRAILING_JUNK + ellipsis[:1])
    return kept + ellipsis


def _parse_template(template: str) -> list[tuple[str, str | None]]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"malformed reply template {template!r}: {exc}") from exc
    pieces: list[tuple[str, str | None]] = []
    for literal, name, format_spec, conversion in parsed:
        if name is not None and (not name.isidentifier() or format_spec or conversion):
            # Attribute/index access, positional fields and format specs are refused so that a
            # template can only ever substitute a value as it is.
            raise TemplateError(
                f"reply template field {{{name}}} must be a plain name like {{full_name}}"
            )
        pieces.append((literal, name))
    return pieces


def template_fields(template: str) -> set[str]:
    """Names of the fields a reply template uses; raises TemplateError if it is malformed."""
    return {name for _, name in _parse_template(template) if name is not None}


def _render(pieces: list[tuple[str, str | None]], values: Mapping[str, str]) -> str:
    return "".join(literal + (values[name] if name is not None else "") for literal, name in pieces)


class ReplyDoesNotFit(ValueError):
    """A reply cannot fit its limit without cutting the whole text (``fit_reply(strict=True)``)."""


def _largest_level(total_at: Callable[[int], int], budget: int, high: int) -> int:
    """The largest cap on every value's units (0..high) whose total stays within ``budget``."""
    low = 0
    while low < high:
        level = (low + high + 1) // 2
        if total_at(level) <= budget:
            low = level
        else:
            high = level - 1
    return low


def _step_down_choices(
    forms: Mapping[str, Sequence[tuple[int, str]]],
    values: dict[str, str],
    units: dict[str, int],
    total: Callable[[], int],
    max_units: int,
) -> bool:
    """Shorten the ``choices`` fields step by step, least important step first; True if it fits.

    Every field takes its rank-0 steps before any takes a rank-1 step (the longest value first
    among equals), so an abbreviation is used everywhere before a unit is dropped anywhere, and a
    house number before any ward. Steps of the last rank taken that turn out not to be needed
    are then given back; steps of lower ranks are not, or one address would be cut to its ward
    while another in the same reply kept its house number: all read alike, at most one step
    apart, the longest shortened first.
    """
    position = dict.fromkeys(forms, 0)
    taken: list[tuple[str, int]] = []

    def move(name: str, index: int) -> None:
        position[name] = index
        values[name] = forms[name][index][1]
        units[name] = gsm7_units(values[name])

    while total() > max_units:
        steppable = [n for n in forms if position[n] + 1 < len(forms[n])]
        if not steppable:
            return False
        name = min(steppable, key=lambda n: (forms[n][position[n] + 1][0], -units[n]))
        move(name, position[name] + 1)
        taken.append((name, position[name]))
    # A late, large step can make earlier ones of its rank unnecessary: undo them, latest first.
    top = max((forms[name][index][0] for name, index in taken), default=0)
    for name, index in reversed(taken):
        if position[name] != index or forms[name][index][0] != top:
            continue
        move(name, index - 1)
        if total() > max_units:
            move(name, index)
    return True


def fit_reply(
    template: str,
    fields: Mapping[str, str],
    max_units: int,
    *,
    abbreviate_fields: Collection[str] | None = None,
    choices: Mapping[str, Sequence[tuple[int, str]]] | None = None,
    keep_whole: Collection[str] = (),
    strict: bool = False,
) -> str:
    """Render ``template`` with ``fields`` as GSM-7 text of at most ``max_units`` units.

    Values are substituted as they are (never formatted or evaluated). When the reply is too long,
    ``choices`` fields step down first (see below); then the longest plain values are abbreviated,
    then cut at word boundaries to one common length (never below an ellipsis), the units that
    word boundaries leave unused are given back, longest value first, and only then is the whole
    reply cut at a word boundary (or, with ``strict``, :class:`ReplyDoesNotFit` raised).

    ``abbreviate_fields`` limits abbreviation to address fields: "Quan" is also a name.
    ``choices`` gives a field as readable forms, longest first, each with the rank of the step
    that made it (an address losing whole units, domain.addresses): such a value is never cut,
    only replaced by a shorter form, the lowest-ranked step first across all such fields.
    ``keep_whole`` names values that are never shortened (a masked ID number).
    """
    if max_units < 0:
        raise ValueError(f"max_units must not be negative, got {max_units}")
    pieces = [(to_gsm7(literal), name) for literal, name in _parse_template(template)]
    occurrences: dict[str, int] = {}
    for _, name in pieces:
        if name is not None:
            occurrences[name] = occurrences.get(name, 0) + 1
    # Each form after the first carries the rank of the step that made it (lower: dropped first).
    forms = {
        name: [(rank, " ".join(to_gsm7(form).split())) for rank, form in options]
        for name, options in (choices or {}).items()
        if name in occurrences and options
    }
    missing = sorted(set(occurrences) - set(fields) - set(forms))
    if missing:
        raise TemplateError(f"reply template needs field(s) not given: {', '.join(missing)}")
    # Newlines or runs of spaces inside a value would break the template's layout.
    values = {
        name: forms[name][0][1] if name in forms else " ".join(to_gsm7(fields[name]).split())
        for name in occurrences
    }
    units = {name: gsm7_units(value) for name, value in values.items()}
    literal_units = sum(gsm7_units(literal) for literal, _ in pieces)

    def total() -> int:
        return literal_units + sum(occurrences[n] * u for n, u in units.items())

    if total() <= max_units:
        return _render(pieces, values)

    if forms and _step_down_choices(forms, values, units, total, max_units):
        return _render(pieces, values)

    plain = [n for n in values if n not in forms and n not in keep_whole]
    # An abbreviation saves at most 10 → 3 units, so anything past 4x the limit is lost anyway;
    # capping first keeps the work proportional to the limit, not to the size of the data.
    cap = 4 * max_units + 16
    for name in plain:
        if units[name] > cap:
            values[name] = cut_at_word(values[name], cap)
            units[name] = gsm7_units(values[name])

    abbreviable = [n for n in plain if abbreviate_fields is None or n in abbreviate_fields]
    for name in sorted(abbreviable, key=units.__getitem__, reverse=True):
        values[name] = abbreviate(values[name])
        units[name] = gsm7_units(values[name])
        if total() <= max_units:
            return _render(pieces, values)

    originals = dict(values)
    floor = gsm7_units(_ELLIPSIS)

    def shortened(name: str, level: int) -> str:
        # A value is never cut to less than an ellipsis, so the reader sees something was there.
        return cut_at_word(originals[name], max(level, floor))

    def total_at(level: int) -> int:
        fixed = sum(occurrences[n] * units[n] for n in units if n not in plain)
        return (
            literal_units
            + fixed
            + sum(occurrences[n] * gsm7_units(shortened(n, level)) for n in plain)
        )

    # Cut every long value to one common length rather than wiping out the longest one.
    level = _largest_level(total_at, max_units, max((units[n] for n in plain), default=0))
    for name in plain:
        values[name] = shortened(name, level)
        units[name] = gsm7_units(values[name])
    # Word boundaries leave some units unused: give them back, longest original first.
    slack = max_units - total()
    for name in sorted(plain, key=lambda n: gsm7_units(originals[n]), reverse=True):
        if slack < occurrences[name]:
            continue
        grown = shortened(name, units[name] + slack // occurrences[name])
        gain = (gsm7_units(grown) - units[name]) * occurrences[name]
        if gain > 0:
            values[name], units[name] = grown, units[name] + gain // occurrences[name]
            slack -= gain

    # A cut value before a template's "." would read "....": one ellipsis is enough.
    rendered = _RUN_OF_DOTS.sub(_ELLIPSIS, _render(pieces, values))
    if gsm7_units(rendered) <= max_units:
        return rendered
    if strict:
        raise ReplyDoesNotFit(f"the reply needs {total()} units, more than {max_units}")
    return _RUN_OF_DOTS.sub(_ELLIPSIS, cut_at_word(rendered, max_units))
