"""The operator's command line: ``seglog COMMAND ...`` (also ``python -m engine COMMAND ...``).

    seglog stat STORE_DIR
    seglog streams STORE_DIR
    seglog dump STORE_DIR (--segment ID | --stream NAME) [--limit N]
    seglog verify STORE_DIR
    seglog backup STORE_DIR DEST
    seglog compact STORE_DIR [--watch] [--interval SECONDS] [--max-rate MIB_PER_S] [--garbage-ratio R]
                             [--segment-bytes N] [--everything]

Every command but ``compact`` opens the store read-only: it never modifies
the store and runs beside a writer in another process. Each error is one line
on stderr, ``seglog: error: ...``; the exit statuses are in :data:`EPILOG`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import reprlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, ModuleType
from typing import Any, TextIO

import engine

from .clikit import (
    EXIT_FAILURE,
    EXIT_NO_STORE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_store_dir,
    error,
    isatty,
    open_readonly,
    parser_class,
    plural,
    run,
)
from .errors import SeglogError
from .log.format import SEGMENT_HEADER_SIZE, RecordType
from .log.record import FLAG_LZ4, FLAG_REFERENCE, RecordView
from .log.segment import LogSegment
from .log.store import Store

__all__ = ["EXIT_FAILURE", "EXIT_NO_STORE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PROG = "seglog"

EPILOG = """\
exit status:
  0  success
  1  runtime failure: a store error (corruption, I/O, locked), verify found
     problems, the store has no such segment or stream, compaction failed or
     is not available, interrupted
  2  usage error: bad command line, or an argument the store refuses
     (e.g. a backup destination that exists and is not empty)
  3  no store: STORE_DIR does not exist, is not a directory, or has no MANIFEST

Errors are one line on stderr: "seglog: error: <what was wrong>".
Every command but compact opens the store read-only and never changes it.
"""

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- output helpers
def _n(value: int) -> str:
    return f"{value:,}"


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _bytes(nbytes: int) -> str:
    """``812 bytes``, ``7,135 bytes (7.0 KiB)``."""
    return f"{nbytes:,} bytes" if abs(nbytes) < 1024 else f"{nbytes:,} bytes ({_human(nbytes)})"


def _table(rows: list[list[str]], right: set[int], out: TextIO) -> None:
    """Columns padded to their widest cell; the columns in ``right`` aligned right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.write("  ".join(cells).rstrip() + "\n")


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = 4
_repr.maxlist = 4
_repr.maxtuple = 4
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlong = 40
PREVIEW_CHARS = 100


def preview(value: Any, width: int = PREVIEW_CHARS) -> str:
    """A short one-line picture of a decoded value (bounded work, whatever its size)."""
    text = _repr.repr(value).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal, at most
    five times a second, starting after half a second of work. With no total
    it shows what was done and the time spent."""

    def __init__(self, label: str, total: int | None = None, unit: Callable[[int], str] = _n) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = isatty(sys.stderr)
        self._t0 = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int = 0, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and (now - self._t0 < 0.5 or now - self._last < 0.2):
            return
        self._last = now
        secs = f"{now - self._t0:.0f} s"
        if self.total:
            width = 30
            filled = min(width, width * done // self.total)
            line = (
                f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.unit(done)}/{self.unit(self.total)}, {secs}"
            )
        else:
            line = f"{self.label}: {secs}"
        sys.stderr.write(f"\r{line}\x1b[K")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """Redraw (elapsed time) from a thread while a call with no progress of its own runs."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.25):
                self.update()

        thread = threading.Thread(target=tick, name="seglog-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.close()


def _compactor() -> ModuleType | None:
    """``engine.log.compactor`` when this seglog has one."""
    try:
        return importlib.import_module("engine.log.compactor")
    except ImportError:
        return None


def _compact_function() -> Callable[..., Any] | None:
    fn = getattr(engine, "compact", None)
    if fn is None:
        module = _compactor()
        fn = getattr(module, "compact", None) if module is not None else None
    return fn if callable(fn) else None


# --------------------------------------------------------------------------- stat
def _when(started: float) -> str:
    ago = max(0.0, time.time() - started)
    if ago < 120:
        rel = f"{ago:.0f} s ago"
    elif ago < 7200:
        rel = f"{ago / 60:.0f} min ago"
    elif ago < 2 * 86400:
        rel = f"{ago / 3600:.0f} h ago"
    else:
        rel = f"{ago / 86400:.0f} days ago"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))} ({rel})"


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids) if ids else "none"


def describe_pass(report: Any) -> str:
    """One line for a compaction pass (a ``CompactionReport``)."""
    if not report.segments_in:
        return f"nothing to compact, {report.duration_s:.2f} s"
    saved = report.bytes_in - report.bytes_out
    share = f", -{100 * saved / report.bytes_in:.0f}%" if report.bytes_in else ""
    return (
        f"segments {_ids(report.segments_in)} -> {_ids(report.segments_out)}: "
        f"{_n(report.bytes_in)} -> {_n(report.bytes_out)} bytes ({_n(saved)} reclaimed{share}), "
        f"{_n(report.records_in)} -> {_n(report.records_out)} records, {report.duration_s:.2f} s"
    )


def cmd_stat(args: argparse.Namespace, out: TextIO) -> int:
    with open_readonly(args.store_dir) as store:
        stats = store.stats()
        with store.pin() as version:
            plain = [(seg.segment_id, seg.size, seg is not version.active) for seg in version.segments()]
    module = _compactor()
    garbage = module.analyze(args.store_dir) if module is not None and hasattr(module, "analyze") else None
    out.write(f"store        {stats.path}\n")
    sealed = sum(1 for _i, _s, is_sealed in plain if is_sealed)
    seg_bytes = sum(size for _i, size, _s in plain)
    out.write(f"segments     {len(plain)} ({sealed} sealed, 1 active), {_bytes(seg_bytes)}\n")
    out.write(f"streams      {_n(stats.streams)}\n")
    out.write(f"events       {_n(stats.events)}\n")
    out.write(f"on disk      {_bytes(stats.bytes_on_disk)} with the indexes and the MANIFEST\n")
    out.write(f"generation   {stats.generation}\n\n")
    if garbage is None:
        rows = [["segment", "bytes", "state"]]
        rows += [[str(sid), _n(size), "sealed" if is_sealed else "active"] for sid, size, is_sealed in plain]
        rows.append(["total", _n(seg_bytes), ""])
        _table(rows, {0, 1}, out)
        return EXIT_OK
    rows = [["segment", "bytes", "state", "live", "garbage", "ratio"]]
    total = 0
    for g in garbage.segments:
        total += g.size
        state = ("sealed, set aside" if g.set_aside else "sealed") if g.sealed else "active"
        if g.sealed:
            rows.append(
                [str(g.segment_id), _n(g.size), state, _n(g.live_bytes), _n(g.garbage_bytes), f"{100 * g.ratio:.1f}%"]
            )
        else:
            rows.append([str(g.segment_id), _n(g.size), state, "-", "-", "-"])
    rows.append(["total", _n(total), "", "", _n(garbage.reclaimable_bytes), ""])
    _table(rows, {0, 1, 3, 4, 5}, out)
    out.write(f"\nreclaimable      {_bytes(garbage.reclaimable_bytes)} in sealed segments\n")
    set_aside = list(getattr(garbage, "set_aside", []))
    if set_aside:
        out.write(f"set aside        segments {_ids(set_aside)} (they failed to compact; see verify)\n")
    last = garbage.last_pass
    if last is None:
        out.write("last compaction  never\n")
    else:
        out.write(f"last compaction  {_when(last.started)}: {describe_pass(last)}; set aside: {_ids(last.set_aside)}\n")
    return EXIT_OK


# --------------------------------------------------------------------------- streams
def cmd_streams(args: argparse.Namespace, out: TextIO) -> int:
    with open_readonly(args.store_dir) as store:
        infos = store.streams()
    if not infos:
        out.write("no streams\n")
        return EXIT_OK
    rows = [["name", "events", "bytes", "blobs"]]
    rows += [[i.name, _n(i.events), _n(i.bytes), _n(i.blobs)] for i in infos]
    _table(rows, {1, 2, 3}, out)
    out.write(
        f"{plural(len(infos), 'stream')}, {plural(sum(i.events for i in infos), 'event')}, "
        f"{_bytes(sum(i.bytes for i in infos))}, {plural(sum(i.blobs for i in infos), 'blob')}\n"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- dump
_TYPE_NAMES: dict[int, str] = {
    RecordType.EVENTS: "events",
    RecordType.BLOB: "blob",
    RecordType.STREAM_CREATE: "create",
    RecordType.STREAM_DROP: "drop",
}


def _flags(flags: int) -> str:
    names = [n for bit, n in ((FLAG_LZ4, "lz4"), (FLAG_REFERENCE, "ref")) if flags & bit]
    rest = flags & ~(FLAG_LZ4 | FLAG_REFERENCE)
    if rest:
        names.append(f"0x{rest:02x}")
    return ",".join(names) or "-"


def describe_record(rec: RecordView, max_bytes: int, names: dict[int, str]) -> str:
    """One line for a record, like Kafka's dump-log: header fields, then a preview of the value."""
    rtype = _TYPE_NAMES.get(rec.rtype, str(rec.rtype))
    stream = f"{rec.stream_id} ({names[rec.stream_id]!r})" if rec.stream_id in names else str(rec.stream_id)
    head = f"offset: {rec.offset} type: {rtype} stream: {stream}"
    tail = f" length: {rec.length} flags: {_flags(rec.flags)}"
    if rec.rtype == RecordType.EVENTS:
        return f"{head} seq: {rec.seq} count: {rec.count}{tail} value: {preview(rec.events(max_bytes))}"
    if rec.rtype == RecordType.BLOB:
        key = rec.blob_key().decode("utf-8", "backslashreplace")
        return f"{head} key_hash: 0x{rec.seq:016x}{tail} key: {key!r} value: {preview(rec.blob_value(max_bytes))}"
    if rec.rtype == RecordType.STREAM_CREATE:
        return f"{head}{tail} name: {rec.name()!r}"
    return head + tail


def _dump_segment(store: Store, segment_id: int, limit: int | None, out: TextIO) -> int:
    with store.pin() as version:
        segments = {seg.segment_id: seg for seg in version.segments()}
        seg: LogSegment | None = segments.get(segment_id)
        if seg is None:
            known = ", ".join(str(i) for i in version.segment_ids)
            raise CliError(EXIT_FAILURE, f"no segment {segment_id} in {store.path} (its segments: {known})")
        # Names of the streams created up to this segment (ids are never reused).
        names: dict[int, str] = {}
        for s in version.sealed:
            if s.segment_id == segment_id:
                break
            names.update(s.index.meta.creates)
        state = "active" if seg is version.active else "sealed"
        out.write(f"segment {segment_id} ({seg.path}), {_n(seg.size)} bytes, {state}\n")
        bar = Progress(f"dump {segment_id}", seg.size, _human)
        shown = 0
        end = SEGMENT_HEADER_SIZE
        try:
            for rec in seg.scan(SEGMENT_HEADER_SIZE):
                if limit is not None and shown >= limit:
                    out.write(f"... stopped after {_n(limit)} records (--limit)\n")
                    return EXIT_OK
                if rec.rtype == RecordType.STREAM_CREATE:
                    names[rec.stream_id] = rec.name()
                out.write(describe_record(rec, seg.max_record_bytes, names) + "\n")
                shown += 1
                end = rec.end
                bar.update(end)
        finally:
            bar.close()
        out.write(f"{plural(shown, 'record')}, up to offset {_n(end)}\n")
        if end < seg.size:
            raise CliError(
                EXIT_FAILURE,
                f"segment {segment_id} has {_n(seg.size - end)} bytes that are not a "
                f"whole record at offset {end} ({seg.path})",
            )
    return EXIT_OK


def _dump_stream(store: Store, name: str, limit: int | None, out: TextIO) -> int:
    info = store.stream_info(name)
    out.write(
        f"stream {info.name!r}: {plural(info.events, 'event')}, {plural(info.blobs, 'blob')}, {_bytes(info.bytes)}\n"
    )
    stop = info.events if limit is None else min(info.events, limit)
    bar = Progress(f"dump {name}", stop)
    try:
        for seq, value in enumerate(store.scan(name, 0, stop)):
            out.write(f"seq: {seq} value: {preview(value)}\n")
            bar.update(seq + 1)
    finally:
        bar.close()
    if stop < info.events:
        out.write(f"... stopped after {_n(stop)} events (--limit)\n")
    keys = store.blob_keys(name)
    for key in keys if limit is None else keys[:limit]:
        out.write(f"blob: {key!r} value: {preview(store.get_blob(name, key))}\n")
    if limit is not None and len(keys) > limit:
        out.write(f"... stopped after {_n(limit)} blobs (--limit)\n")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, out: TextIO) -> int:
    with open_readonly(args.store_dir) as store:
        if args.segment is not None:
            return _dump_segment(store, args.segment, args.limit, out)
        return _dump_stream(store, args.stream, args.limit, out)


# --------------------------------------------------------------------------- verify, backup
def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    with open_readonly(args.store_dir) as store, Progress("verify").ticking():
        report = store.verify()
    for problem in report.problems:
        out.write(f"problem: {problem}\n")
    out.write(f"{plural(report.records, 'record')} checked, {plural(len(report.problems), 'problem')}\n")
    if report.problems:
        error(PROG, f"{args.store_dir} has {plural(len(report.problems), 'damaged record')}")
        return EXIT_FAILURE
    return EXIT_OK


def cmd_backup(args: argparse.Namespace, out: TextIO) -> int:
    with open_readonly(args.store_dir) as store:
        with Progress(f"backup to {args.dest}").ticking():
            store.backup(args.dest)
        stats = store.stats()
    out.write(
        f"backed up {args.store_dir} to {args.dest}: {plural(stats.segments, 'segment')}, "
        f"{plural(stats.streams, 'stream')}, {plural(stats.events, 'event')}\n"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- compact
class _StopFlag:
    """SIGTERM and SIGINT set the flag (and wake a sleep) instead of killing the
    process; the handlers in place before are put back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


def cmd_compact(args: argparse.Namespace, out: TextIO) -> int:
    check_store_dir(args.store_dir)
    compact = _compact_function()
    if compact is None:
        raise CliError(EXIT_FAILURE, "compaction is not available in this version of seglog")
    options: dict[str, Any] = {}
    if args.max_rate is not None:
        options["max_rate_mib"] = args.max_rate
    if args.garbage_ratio is not None:
        options["garbage_ratio"] = args.garbage_ratio
    if args.segment_bytes is not None:
        options["segment_bytes"] = args.segment_bytes
    if args.everything:
        options["everything"] = True
    passes = reclaimed = failed = 0
    with _StopFlag() as stop:
        while True:
            try:
                report = compact(args.store_dir, **options)
            except SeglogError as exc:
                if not args.watch:
                    raise
                # --watch goes on: a segment that keeps failing is set aside (seglog stat)
                failed += 1
                error(PROG, f"pass failed: {exc}")
            else:
                passes += 1
                reclaimed += report.bytes_in - report.bytes_out
                prefix = f"pass {passes}: " if args.watch else ""
                out.write(f"{prefix}{describe_pass(report)}\n")
                out.flush()
            if not args.watch or stop.stopped or stop.event.wait(args.interval):
                break
    if args.watch:
        why = f"stopped by {signal.Signals(stop.signum).name}" if stop.signum else "stopped"
        failures = f", {plural(failed, 'failed pass', 'failed passes')}" if failed else ""
        out.write(f"{why}: {plural(passes, 'pass', 'passes')}, {_bytes(reclaimed)} reclaimed{failures}\n")
    return EXIT_OK


# --------------------------------------------------------------------------- the parser
_Parser = parser_class(PROG)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _positive_float(text)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive integer, not 0")
    return value


def _ratio(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Inspect, check, back up and compact a seglog store (also run as 'python -m engine').",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    store_help = "the store's directory (the one holding its MANIFEST)"

    def command(name: str, help: str, func: Callable[[argparse.Namespace, TextIO], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("store_dir", metavar="STORE_DIR", help=store_help)
        p.set_defaults(func=func)
        return p

    command("stat", "segments (size, state, garbage), totals, streams, events and the last compaction", cmd_stat)
    command("streams", "one line per stream: name, events, bytes, blobs", cmd_streams)
    p = command("dump", "print the records of a segment, or the events and blobs of a stream", cmd_dump)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--segment",
        type=_non_negative_int,
        metavar="ID",
        help="every record of segment ID in file order (ids: see 'stat')",
    )
    which.add_argument("--stream", metavar="NAME", help="the events of stream NAME in order, then its blobs")
    p.add_argument(
        "--limit",
        type=_non_negative_int,
        metavar="N",
        help="stop after N records (--segment), or N events and N blobs (--stream)",
    )
    command("verify", "check every record's checksum and payload; exit 1 if any is damaged", cmd_verify)
    p = command("backup", "copy the store, consistent as of now, into a new or empty directory", cmd_backup)
    p.add_argument("dest", metavar="DEST", help="the backup's directory: new, or empty (it becomes a store)")
    p = command("compact", "rewrite sealed segments without their dead records (the store may be in use)", cmd_compact)
    p.add_argument(
        "--watch",
        action="store_true",
        help="compact again every --interval seconds until SIGTERM or SIGINT (the pass in progress finishes first)",
    )
    p.add_argument(
        "--interval",
        type=_non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="with --watch: seconds between passes, 0 for back to back (default: 10)",
    )
    p.add_argument(
        "--segment-bytes",
        type=_positive_int,
        metavar="N",
        help="size of the segments written (default: 64 MiB, the store's default)",
    )
    p.add_argument(
        "--everything",
        action="store_true",
        help="rewrite every sealed segment, whatever its garbage (merges small ones too)",
    )
    p.add_argument(
        "--max-rate",
        type=_positive_float,
        metavar="MIB_PER_S",
        help="read at most this many MiB/s of input segments (default: unthrottled)",
    )
    p.add_argument(
        "--garbage-ratio",
        type=_ratio,
        metavar="R",
        help="rewrite a sealed segment once this share of it is dead, 0 < R <= 1 (default: the compactor's)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (never raises, never prints a traceback)."""
    return run(PROG, build_parser(), sys.argv[1:] if argv is None else argv)
