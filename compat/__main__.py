"""Command line: ``python -m compat import|materialize|verify ...``.

    python -m compat import LEGACY_DIR STORE_DIR
    python -m compat materialize STORE_DIR OUT_DIR [--session NAME ...]
    python -m compat verify LEGACY_DIR STORE_DIR

Exit status: 0 on success; 1 when some session failed to import or a file did
not verify; 2 on bad input (with a one-line message).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import engine
from engine.errors import SeglogError
from engine.session.catalog import SessionCatalog

from .importer import import_legacy, legacy_names, snapshot_names
from .materialize import materialize_session, materialize_snapshot, snapshots
from .progress import Progress
from .verify import verify


def _fail(message: str) -> int:
    sys.stderr.write(f"compat: error: {message}\n")
    return 2


def _open_readonly(store_dir: str) -> engine.Store:
    if not os.path.isdir(store_dir):
        raise SeglogError(f"no store at {store_dir}")
    return engine.open(store_dir, readonly=True)


def cmd_import(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.legacy_dir):
        return _fail(f"no such directory: {args.legacy_dir}")
    total = len(legacy_names(args.legacy_dir)) + len(snapshot_names(args.legacy_dir))
    failed = 0
    counts: dict[str, int] = {}
    with engine.open(args.store_dir, compress_events=True) as store:
        catalog = SessionCatalog(store)
        bar = Progress(total, "import")
        for result in import_legacy(catalog, args.legacy_dir):
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.status == "failed":
                failed += 1
                sys.stderr.write(f"compat: {result.name}: {result.error}\n")
            bar.update()
        bar.close()
        collected = catalog.collect()
        del collected
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to import"
    sys.stdout.write(f"{summary}\n")
    return 1 if failed else 0


def cmd_materialize(args: argparse.Namespace) -> int:
    with _open_readonly(args.store_dir) as store:
        catalog = SessionCatalog(store)
        names = args.session if args.session else catalog.names()
        missing = [n for n in names if n not in catalog]
        if missing:
            return _fail(f"no session named {missing[0]!r} in {args.store_dir}")
        snaps = snapshots(catalog) if not args.session else {}
        bar = Progress(len(names) + len(snaps), "materialize")
        written = 0
        for name in names:
            m = materialize_session(catalog, name, args.out_dir)
            written += m.jsonl_bytes + m.index_bytes
            bar.update()
        for name, data in snaps.items():
            materialize_snapshot(args.out_dir, name, data)
            written += len(data)
            bar.update()
        bar.close()
    sys.stdout.write(f"{len(names)} sessions, {len(snaps)} snapshots, {written:,} bytes written to {args.out_dir}\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.legacy_dir):
        return _fail(f"no such directory: {args.legacy_dir}")
    with _open_readonly(args.store_dir) as store:
        catalog = SessionCatalog(store)
        bad = 0
        for mismatch in verify(catalog, args.legacy_dir):
            bad += 1
            sys.stdout.write(f"{mismatch}\n")
    if bad:
        sys.stdout.write(f"{bad} file(s) differ\n")
        return 1
    sys.stdout.write("all files reproduced byte for byte\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compat", description="Legacy session files and seglog stores.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="import a legacy directory into a store")
    p.add_argument("legacy_dir")
    p.add_argument("store_dir")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("materialize", help="write legacy files for sessions of a store")
    p.add_argument("store_dir")
    p.add_argument("out_dir")
    p.add_argument("--session", action="append", metavar="NAME", help="only this session (repeatable)")
    p.set_defaults(func=cmd_materialize)
    p = sub.add_parser("verify", help="check that a store reproduces a legacy directory byte for byte")
    p.add_argument("legacy_dir")
    p.add_argument("store_dir")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="compat: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SeglogError, OSError) as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
