"""What the command lines of the project share: exit statuses, one-line errors,
the read-only opening of a STORE_DIR and the run of one command.

``python -m engine`` (``seglog``) and ``python -m compat`` both use it, so that
their conventions are one: errors are one line on stderr (``<prog>: error:
<what was wrong>``), usage errors exit 2, and nothing but ``SystemExit`` from
``--help`` leaves :func:`run` (set ``SEGLOG_TRACEBACK=1`` to see where an
unexpected error came from).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn, TextIO

from .errors import InvalidArgumentError, NotFoundError, SeglogError
from .log.format import MANIFEST_NAME
from .log.store import Store
from .log.store import open as open_store

EXIT_OK = 0
#: A runtime failure: a store error, problems found, something asked for that the
#: store does not hold, an interruption (each command line says which for it).
EXIT_FAILURE = 1
#: The command line is wrong, or an argument cannot serve as what it stands for.
EXIT_USAGE = 2
#: STORE_DIR does not exist, is not a directory or holds no store (no MANIFEST).
EXIT_NO_STORE = 3


class CliError(Exception):
    """A failure to report as one line, with the exit status it stands for."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def plural(count: int, noun: str, many: str = "") -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {many or noun + 's'}"


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def error(prog: str, message: str) -> None:
    """Write ``message`` as one error line on stderr."""
    sys.stderr.write(f"{prog}: error: {' '.join(message.split())}\n")


def describe(exc: BaseException) -> str:
    """An error in the user's terms: an OS error as its message and the file it concerns."""
    if isinstance(exc, OSError) and not isinstance(exc, SeglogError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def parser_class(prog: str) -> type[argparse.ArgumentParser]:
    """An ArgumentParser (subparsers included) whose usage errors are one line on stderr, exit 2."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.exit(EXIT_USAGE, f"{prog}: error: {message} (see '{self.prog} --help')\n")

    return Parser


# --------------------------------------------------------------------------- the store
def check_store_dir(path: str) -> None:
    """Refuse a STORE_DIR that holds no store, in the user's terms (exit 3)."""
    if not os.path.exists(path):
        raise CliError(EXIT_NO_STORE, f"no store at {path} (no such directory)")
    if not os.path.isdir(path):
        raise CliError(EXIT_NO_STORE, f"{path} is not a directory")
    if not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        raise CliError(EXIT_NO_STORE, f"no store at {path} (no MANIFEST)")


@contextmanager
def open_readonly(path: str) -> Iterator[Store]:
    check_store_dir(path)
    try:
        store = open_store(path, readonly=True)
    except NotFoundError as exc:  # the MANIFEST went between the check and the open
        raise CliError(EXIT_NO_STORE, str(exc)) from exc
    with store:
        yield store


# --------------------------------------------------------------------------- one command
def run(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the command it names (``args.func(args, stdout)``); return
    the exit status. Never raises, never prints a traceback."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(message)s")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = sys.stdout
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    try:
        code = int(func(args, out))
        out.flush()
        return code
    except BrokenPipeError:  # the reader of our output went away (| head): stop quietly
        _silence_stdout()
        return EXIT_FAILURE
    except (CliError, SeglogError, OSError) as exc:
        if isinstance(exc, CliError):
            code = exc.code
        else:
            code = EXIT_USAGE if isinstance(exc, InvalidArgumentError) else EXIT_FAILURE
        _flush_quietly(out)
        error(prog, describe(exc))
        return code
    except KeyboardInterrupt:
        _flush_quietly(out)
        error(prog, "interrupted")
        return EXIT_FAILURE
    except Exception as exc:
        if os.environ.get("SEGLOG_TRACEBACK"):
            raise
        _flush_quietly(out)
        error(prog, f"unexpected {type(exc).__name__}: {exc} (SEGLOG_TRACEBACK=1 shows where)")
        return EXIT_FAILURE


def _flush_quietly(out: TextIO) -> None:
    try:
        out.flush()
    except (OSError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's exit flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
