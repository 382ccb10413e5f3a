"""Legacy session files: materialize ``sessions/<name>.jsonl`` + ``<name>.index.json``
byte for byte, and import existing ones."""
