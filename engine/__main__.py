"""``python -m engine COMMAND ...``: the operator's command line (see :mod:`engine.cli`)."""

from .cli import main

raise SystemExit(main())
