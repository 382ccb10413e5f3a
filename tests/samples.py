"""Where the legacy sample files are: ``$SEGLOG_LEGACY_SAMPLES``, else the
``shared/legacy-samples`` folder beside the repository (as in a CI clone).

Tests take the path from the ``legacy_samples`` fixture (conftest.py), which
skips when the folder is absent; module-level parametrization uses ``SAMPLES``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("SEGLOG_LEGACY_SAMPLES") or REPO.parent / "shared" / "legacy-samples")
