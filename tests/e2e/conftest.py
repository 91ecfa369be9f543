"""End-to-end tests read each provider kind's wire format from its unit test file."""

from __future__ import annotations

import sys
from pathlib import Path

UNIT_TESTS = str(Path(__file__).resolve().parents[1] / "unit")
if UNIT_TESTS not in sys.path:
    sys.path.insert(0, UNIT_TESTS)  # where provider_cases and test_provider_*.py live
