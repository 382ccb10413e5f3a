"""Command line: ``python -m compat import|materialize|verify ...``.

    python -m compat import LEGACY_DIR STORE_DIR
    python -m compat materialize STORE_DIR OUT_DIR [--session NAME ...]
    python -m compat verify LEGACY_DIR STORE_DIR

The conventions are those of the operator's command line (``engine.cli``): each
error is one line on stderr, ``compat: error: ...``; the exit statuses are in
:data:`EPILOG`. Folders are checked before anything is read or written, and
refused in the user's terms: a legacy directory is the folder that holds
``sessions/``; a store is a new or empty folder or one holding a MANIFEST,
never the legacy folder or inside it; materialize never writes into a store.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TextIO

import engine
from engine.clikit import (
    EXIT_FAILURE,
    EXIT_NO_STORE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_store_dir,
    describe,
    error,
    open_readonly,
    parser_class,
    plural,
    run,
)
from engine.errors import (
    InvalidNameError,
    SeglogError,
    StoreClosedError,
    StoreFailedError,
)
from engine.log.format import MANIFEST_NAME
from engine.session.catalog import SessionCatalog
from engine.session.schema import check_session_name

from .importer import import_legacy, legacy_names, snapshot_names
from .materialize import APPENDED, UNCHANGED, WRITTEN, materialize_session, snapshots, write_snapshot
from .names import SIDECAR_DIR
from .progress import Progress
from .verify import verify

__all__ = ["EXIT_FAILURE", "EXIT_NO_STORE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PROG = "compat"
USAGE_PROG = "python -m compat"
EPILOG = """\
exit status:
  0  success
  1  runtime failure: a session or snapshot could not be imported or
     materialized (each is named on stderr; the others are done), verify found
     files that differ, the store has no session of a --session NAME, a store
     error (corruption, I/O, locked), interrupted
  2  usage error: bad command line, or a folder that cannot serve: LEGACY_DIR
     missing or without sessions/; an import STORE_DIR that is a file, neither
     empty nor a store, the legacy folder or inside it; an OUT_DIR that is a
     file, a store, or the store's folder or inside it
  3  no store: the STORE_DIR of materialize or verify does not exist, is not a
     directory, or has no MANIFEST

Errors are one line on stderr: "compat: error: <what was wrong>".
"""

LEGACY_HELP = (
    "the REPL's session folder: the one that holds sessions/ (and any repl-NAME.json snapshots), not sessions/ itself"
)
STORE_HELP = "the store's folder (the one holding its MANIFEST)"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- folders
def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
    """Is ``path`` strictly inside ``folder``? (both resolved)"""
    return path != folder and os.path.commonpath([path, folder]) == folder


def _creatable(path: str, what: str) -> None:
    """A path that does not exist yet: its nearest existing ancestor must be a folder."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CliError(EXIT_USAGE, f"{what} {path} cannot be created: {parent} is a file, not a folder")


def check_legacy_dir(path: str) -> None:
    """LEGACY_DIR must be a folder that holds ``sessions/`` (exit 2)."""
    expected = "LEGACY_DIR is the folder that holds sessions/"
    if not os.path.exists(path):
        raise CliError(EXIT_USAGE, f"no such folder: {path} ({expected})")
    if not os.path.isdir(path):
        raise CliError(EXIT_USAGE, f"{path} is a file, not a folder ({expected})")
    sessions = os.path.join(path, "sessions")
    if os.path.isdir(sessions):
        return
    if os.path.exists(sessions):
        raise CliError(EXIT_USAGE, f"{sessions} is a file, not a folder ({expected})")
    try:
        looks_like_sessions = any(e.endswith((".jsonl", ".index.json")) for e in os.listdir(path))
    except OSError:
        looks_like_sessions = False
    if looks_like_sessions or os.path.basename(os.path.normpath(path)) == "sessions":
        parent = os.path.dirname(os.path.abspath(path))
        raise CliError(
            EXIT_USAGE,
            f"{path} has no sessions/ folder: it looks like the sessions/ folder itself; "
            f"give the folder that holds it ({parent})",
        )
    raise CliError(EXIT_USAGE, f"{path} has no sessions/ folder ({expected})")


def check_new_store_dir(path: str, legacy_dir: str) -> None:
    """An import's STORE_DIR: new, empty, or a store; never the legacy folder or inside it (exit 2)."""
    wanted = "give a new or empty folder, or an existing store"
    real, legacy = _real(path), _real(legacy_dir)
    if real == legacy:
        raise CliError(
            EXIT_USAGE,
            f"STORE_DIR {path} is the legacy folder itself; give the store a folder of "
            "its own (a new or empty folder, or an existing store)",
        )
    if _inside(real, legacy):
        raise CliError(
            EXIT_USAGE,
            f"STORE_DIR {path} is inside the legacy folder {legacy_dir}; give the store a "
            "folder outside it (a new or empty folder, or an existing store)",
        )
    if not os.path.exists(path):
        _creatable(path, "STORE_DIR")
        return
    if not os.path.isdir(path):
        raise CliError(EXIT_USAGE, f"STORE_DIR {path} is a file, not a folder; {wanted}")
    if os.path.isfile(os.path.join(path, MANIFEST_NAME)) or not os.listdir(path):
        return
    raise CliError(EXIT_USAGE, f"STORE_DIR {path} is not empty and holds no store (no MANIFEST); {wanted}")


def check_out_dir(path: str, store_dir: str) -> None:
    """OUT_DIR: a folder (or one that can be created) that is no store and not in STORE_DIR (exit 2)."""
    real, store = _real(path), _real(store_dir)
    if real == store:
        raise CliError(EXIT_USAGE, f"OUT_DIR {path} is the store's folder; write the legacy files to another folder")
    if _inside(real, store):
        raise CliError(
            EXIT_USAGE,
            f"OUT_DIR {path} is inside the store's folder {store_dir}; write the legacy files to a folder outside it",
        )
    if not os.path.exists(path):
        _creatable(path, "OUT_DIR")
        return
    if not os.path.isdir(path):
        raise CliError(EXIT_USAGE, f"OUT_DIR {path} is a file, not a folder")
    if os.path.exists(os.path.join(path, MANIFEST_NAME)):
        raise CliError(
            EXIT_USAGE, f"OUT_DIR {path} holds a store (a MANIFEST); write the legacy files to another folder"
        )
    for sub in ("sessions", "receipts", SIDECAR_DIR):
        p = os.path.join(path, sub)
        if os.path.exists(p) and not os.path.isdir(p):
            raise CliError(EXIT_USAGE, f"{p} is a file; materialize needs {sub}/ there to be a folder")


# --------------------------------------------------------------------------- commands
def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    check_legacy_dir(args.legacy_dir)
    check_new_store_dir(args.store_dir, args.legacy_dir)
    total = len(legacy_names(args.legacy_dir)) + len(snapshot_names(args.legacy_dir))
    failed = 0
    counts: dict[str, int] = {}
    with engine.open(args.store_dir, compress_events=True) as store:
        catalog = SessionCatalog(store)
        bar = Progress(total, "import")
        try:
            for result in import_legacy(catalog, args.legacy_dir):
                counts[result.status] = counts.get(result.status, 0) + 1
                if result.status == "failed":
                    failed += 1
                    what = result.name if result.name.startswith("repl-") else f"session {result.name!r}"
                    bar.interrupt()
                    error(PROG, f"{what} not imported: {result.error}")
                bar.update()
        finally:
            bar.close()
        catalog.collect()
    summary = ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items())) or "nothing to import"
    out.write(f"{summary}\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _session_names(args: argparse.Namespace, catalog: SessionCatalog) -> list[str]:
    if not args.session:
        return catalog.names()
    names = list(dict.fromkeys(args.session))
    for name in names:
        try:
            check_session_name(name)
        except InvalidNameError as exc:
            raise CliError(EXIT_USAGE, f"--session {name!r}: {exc}") from None
    for name in names:
        if name not in catalog:
            raise CliError(EXIT_FAILURE, f"no session named {name!r} in {args.store_dir}")
    return names


#: Errors of the output folder or the store as a whole: no use going on with the next item.
_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _fatal(exc: BaseException) -> bool:
    if isinstance(exc, (StoreFailedError, StoreClosedError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS


def _counts(kind: str, counts: dict[str, int], total: int) -> str:
    parts = [
        f"{counts[s]:,} {label}"
        for s, label in ((WRITTEN, "written"), (APPENDED, "appended"), (UNCHANGED, "unchanged"), ("failed", "failed"))
        if counts.get(s)
    ]
    return plural(total, kind) + (f" ({', '.join(parts)})" if parts else "")


def cmd_materialize(args: argparse.Namespace, out: TextIO) -> int:
    check_store_dir(args.store_dir)
    check_out_dir(args.out_dir, args.store_dir)
    with open_readonly(args.store_dir) as store:
        catalog = SessionCatalog(store)
        names = _session_names(args, catalog)
        snaps = snapshots(catalog) if not args.session else {}
        bar = Progress(len(names) + len(snaps), "materialize")
        sessions: dict[str, int] = {}
        snapshot_counts: dict[str, int] = {}

        def attempt(kind: str, name: str, counts: dict[str, int], work: Callable[[], tuple[str, int]]) -> int:
            """Do one item; a failure is reported and counted, and the next item goes on."""
            try:
                status, nbytes = work()
            except (SeglogError, OSError) as exc:
                if _fatal(exc):
                    raise
                status, nbytes = "failed", 0
                bar.interrupt()
                error(PROG, f"{kind} {name!r} not materialized: {describe(exc)}")
            counts[status] = counts.get(status, 0) + 1
            bar.update()
            return nbytes

        def session(name: str) -> tuple[str, int]:
            m = materialize_session(catalog, name, args.out_dir)
            return m.status, m.bytes_written

        def snapshot(name: str, data: bytes) -> tuple[str, int]:
            return (WRITTEN, len(data)) if write_snapshot(args.out_dir, name, data) else (UNCHANGED, 0)

        written = 0
        try:
            for name in names:
                written += attempt("session", name, sessions, partial(session, name))
            for name, data in snaps.items():
                written += attempt("snapshot", name, snapshot_counts, partial(snapshot, name, data))
        finally:
            bar.close()
    out.write(
        f"{_counts('session', sessions, len(names))}, {_counts('snapshot', snapshot_counts, len(snaps))}; "
        f"{plural(written, 'byte')} written to {args.out_dir}\n"
    )
    failed = sessions.get("failed", 0) + snapshot_counts.get("failed", 0)
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    check_legacy_dir(args.legacy_dir)
    with open_readonly(args.store_dir) as store:
        catalog = SessionCatalog(store)
        total = len(legacy_names(args.legacy_dir)) + len(snapshot_names(args.legacy_dir))
        bar = Progress(total, "verify")
        bad = 0
        try:
            for mismatch in verify(catalog, args.legacy_dir, progress=bar.update):
                bad += 1
                bar.interrupt()
                out.write(f"{mismatch}\n")
                out.flush()
        finally:
            bar.close()
    if bad:
        out.write(f"{plural(bad, 'file differs', 'files differ')}\n")
        return EXIT_FAILURE
    out.write("all files reproduced byte for byte\n")
    return EXIT_OK


# --------------------------------------------------------------------------- the parser
_Parser = parser_class(PROG)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=USAGE_PROG,
        description="Legacy session files and seglog stores: import a REPL's "
        "session folder into a store, write it back (materialize), check it byte for byte (verify).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, func: Callable[[argparse.Namespace, TextIO], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = command("import", "import a legacy session folder into a store (again: only what changed)", cmd_import)
    p.add_argument("legacy_dir", metavar="LEGACY_DIR", help=LEGACY_HELP)
    p.add_argument(
        "store_dir",
        metavar="STORE_DIR",
        help="the store to import into: a new or empty folder (it becomes a store) or an existing "
        "store (a folder holding a MANIFEST); not LEGACY_DIR nor a folder inside it",
    )
    p = command(
        "materialize",
        "write the legacy files of a store's sessions; files already up to date are "
        "left alone, grown sessions get their new lines appended",
        cmd_materialize,
    )
    p.add_argument("store_dir", metavar="STORE_DIR", help=STORE_HELP)
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        help="where to write sessions/, receipts/ and repl-NAME.json (created if needed); not a "
        "store, nor STORE_DIR or a folder inside it",
    )
    p.add_argument(
        "--session",
        action="append",
        metavar="NAME",
        help="only this session (repeatable); a NAME may start with '-': --session -dash and --session=-dash both work",
    )
    p = command(
        "verify",
        "check that a store reproduces a legacy session folder byte for byte; exit 1 if any file differs",
        cmd_verify,
    )
    p.add_argument("legacy_dir", metavar="LEGACY_DIR", help=LEGACY_HELP)
    p.add_argument("store_dir", metavar="STORE_DIR", help=STORE_HELP)
    return parser


def _join_session_values(argv: list[str]) -> list[str]:
    """``--session -dash`` as ``--session=-dash``: a NAME may start with '-'."""
    if not argv or argv[0] != "materialize":
        return argv
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg == "--session" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--session={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (never raises, never prints a traceback)."""
    return run(PROG, build_parser(), _join_session_values(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
