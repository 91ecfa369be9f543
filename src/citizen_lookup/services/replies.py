"""Reply templates per language, from config/templates/<language>.toml, fitted to one SMS."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from citizen_lookup.domain.text import fit_reply, max_units_for_segments
from citizen_lookup.exceptions import ConfigurationError

LANGUAGES = ("vi", "en")
REQUIRED_REPLIES = (
    "help",
    "invalid_id",
    "missing_id",
    "not_matched",
    "over_limit",
    "over_help_limit",
    "busy",
    "personal",
    "residence",
    "residence_permanent",
    "residence_temporary",
    "residence_current",
    "residence_temporary_hint",
    "health",
    "health_expired",
    "tax",
    "social",
    "no_record",
    "history",
    "history_none",
    "ussd_menu",
    "ussd_reask_menu",
    "ussd_ask_id",
    "ussd_reask_id",
    "ussd_help",
    "ussd_invalid_end",
    "ussd_sms_result",
    "ussd_over_limit",
    "ussd_session_ended",
    "ussd_session_invalid",
    "ussd_busy",
)


@dataclass(frozen=True)
class Templates:
    replies: Mapping[str, Mapping[str, str]]  # language -> name -> template
    words: Mapping[str, Mapping[str, str]]  # language -> word -> text
    max_units: int

    @classmethod
    def load(cls, config_dir: Path, segments: int) -> Templates:
        """Read every language's templates; fail naming the file and the missing key."""
        replies: dict[str, Mapping[str, str]] = {}
        words: dict[str, Mapping[str, str]] = {}
        for language in LANGUAGES:
            path = config_dir / "templates" / f"{language}.toml"
            try:
                with path.open("rb") as handle:
                    data = tomllib.load(handle)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(f"cannot read reply templates {path}: {exc}") from exc
            missing = [name for name in REQUIRED_REPLIES if name not in data.get("replies", {})]
            if missing:
                raise ConfigurationError(f"{path} lacks replies: {', '.join(missing)}")
            replies[language] = data["replies"]
            words[language] = data.get("words", {})
        return cls(replies, words, max_units_for_segments(segments))

    def render(
        self,
        language: str,
        name: str,
        *,
        choices: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        **fields: str,
    ) -> str:
        """The reply ``name`` in ``language``, GSM-7 and within the segment limit.

        ``choices`` gives fields as readable forms, longest first (an address losing whole
        units): they are never cut, only replaced by a shorter form (see ``fit_reply``).
        """
        language = language if language in self.replies else "vi"
        return fit_reply(self.replies[language][name], fields, self.max_units, choices=choices)

    def within(self, max_units: int) -> Templates:
        """The same templates fitted to ``max_units`` (a USSD screen holds 182, not 160)."""
        return replace(self, max_units=max_units)

    def word(self, language: str, name: str) -> str:
        language = language if language in self.words else "vi"
        return self.words[language].get(name, name)
