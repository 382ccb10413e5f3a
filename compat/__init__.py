"""Legacy session files: materialize ``sessions/<name>.jsonl`` + ``<name>.index.json``
byte for byte, and import existing ones."""

import logging

# Library warnings reach stderr only when the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())
