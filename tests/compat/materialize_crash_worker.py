"""Child program of tests/test_compat_materialize.py: materialize a session forever.

    python tests/materialize_crash_worker.py OUT_DIR NAME STORE_A STORE_B

Materializes session NAME of STORE_A, then of STORE_B (the same session with more
events: an incremental append), then of STORE_A again (a full rewrite), ... into
OUT_DIR until it is killed. Prints ``ready`` once both versions were written once.
"""

from __future__ import annotations

import sys

import engine
from compat.materialize import materialize_session
from engine.session.catalog import SessionCatalog


def main() -> None:
    out, name, *store_dirs = sys.argv[1:]
    stores = [engine.open(d, readonly=True) for d in store_dirs]
    catalogs = [SessionCatalog(s) for s in stores]
    rounds = 0
    while True:
        for cat in catalogs:
            materialize_session(cat, name, out)
        rounds += 1
        if rounds == 1:
            sys.stdout.write("ready\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
