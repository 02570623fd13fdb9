"""Entry point of the `edgeprune` console script.

Consumes: argv. Produces: an exit code (0 ok, 1 bug, 2 bad input or usage, 3 quality gate).

Every module in this package other than this one and ``common`` is a subcommand: it
defines ``add_parser(subparsers)`` and ``run(args) -> int``. Discovering them keeps this
file free of a list that every new subcommand would have to edit.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import pkgutil
import sys
import warnings

from .. import __version__
from ..errors import UserError
from .common import EXIT_BUG, EXIT_USAGE, fail

_NOT_SUBCOMMANDS = {"main", "common", "__init__"}
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}
# What a torch-free device install (`pip install edgeprune[device]`) lacks: the commands that need one of these
# say so and exit 2 instead of failing with an import traceback.
_HOST_PACKAGES = {n: n for n in ("torch", "onnx", "onnxscript", "matplotlib", "tflite")}


def _subcommand_names() -> list[str]:
    package = importlib.import_module("edgeprune.cli")
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if info.name not in _NOT_SUBCOMMANDS and not info.name.startswith("_")
    )


def _subcommand_modules(only: str | None = None):
    for name in _subcommand_names():
        if only is None or name == only:
            yield importlib.import_module(f"edgeprune.cli.{name}")


class _Parser(argparse.ArgumentParser):
    # argparse exits with 2 and a usage block; we keep the 2 but print one line.
    def error(self, message):
        fail(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``only`` one (which then imports nothing else)."""
    parser = _Parser(prog="edgeprune", description="Prune, quantize and compile PyTorch models for edge devices.")
    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _subcommand_modules(only):
        module.add_parser(sub)
    for subparser in sub.choices.values():  # `edgeprune build ... -v` works as well as `edgeprune -v build ...`
        subparser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of internal errors"
        )
    return parser


def _host_package(e: ModuleNotFoundError) -> str | None:
    return _HOST_PACKAGES.get((e.name or "").split(".")[0])


def _needs_host_install(command: str | None, e: ModuleNotFoundError) -> int:
    print(
        f"error: edgeprune {command} needs the {_host_package(e)} package, which this install lacks: "
        "pip install torch==2.13.0 'edgeprune[host]' (a device install runs bench, inspect, doctor and the runtime)",
        file=sys.stderr,
    )
    return EXIT_USAGE


@contextlib.contextmanager
def _one_line_warnings(verbose: bool):
    """Warnings as ``warning: MESSAGE`` lines, each message once, without Python's file:line and
    source line (which name edgeprune's code, not the user's); ``-v`` keeps Python's format."""
    if verbose:
        yield
        return
    seen: set = set()
    saved = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = (str(message).strip().splitlines() or [""])[0]
        if text in seen:
            return
        seen.add(text)
        kind = "" if category is UserWarning else f"{category.__name__}: "
        print(f"warning: {kind}{text}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # When the first word names a subcommand, import only that module: `edgeprune bench` must
    # start on a device without torch, and no command should pay for the others' imports.
    first = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(first if first in _subcommand_names() else None)
    except ModuleNotFoundError as e:  # a subcommand's flags come from a module that needs torch
        if _host_package(e) is None:
            raise
        return _needs_host_install(first, e)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    args.argv = argv  # the command line as given, for commands that re-launch themselves (--nproc)
    try:
        with _one_line_warnings(getattr(args, "verbose", False)):
            return int(args.run(args) or 0)
    except UserError as e:  # the user's files, flags or environment: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.verbose:
            raise
        if e.errno in _ENVIRONMENT_ERRNOS:
            # the machine, not edgeprune: no permission, a full or read-only disk
            print(
                f"error: {e.filename or 'writing output'}: {e.strerror}; free space or choose another --out",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if e.filename and e.strerror:
            # a path the user gave that cannot be used as asked (a directory where a file is
            # written, a missing or unusable parent, a special file system)
            where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
            print(f"error: {where}: {e.strerror}; check the path or choose another one", file=sys.stderr)
            return EXIT_USAGE
        print(f"internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_BUG
    except ModuleNotFoundError as e:
        if _host_package(e) is None or args.verbose:
            raise
        return _needs_host_install(args.command, e)
    except Exception as e:  # a bug: one line, the traceback only with -v
        if args.verbose:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
