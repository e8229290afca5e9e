"""Where the checkout's files are, named once so a test can move between tiers without its paths changing."""

from __future__ import annotations

from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent.parent  # the repository
TESTS: Final = ROOT / "tests"
DATA: Final = TESTS / "data"  # vendors' documents and old stores the tests read
#: The shipped Prometheus rules files: a Prometheus that runs the alerts loads both.
RULE_FILES: Final = (
    ROOT / "alerting-rules" / "calabi-sync.rules.yml",
    ROOT / "alerting-rules" / "calabi-slo.rules.yml",
)
