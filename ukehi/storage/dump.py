"""``ukehi wal dump DATA_DIR [--policy P] [--group G]``: print a WAL as JSON lines, read-only.

Like etcd's dump-logs. Output: one JSON object per entry the policy keeps::

    {"segment": "wal-00000001.seg", "offset": 12, "version": 2, "term": 1, "index": 1,
     "fencing_token": 4294967297, "command": "<hex>"}

then one line ``{"corruption_report": {...}}`` with the report under that policy. The
policy is simulated in memory: nothing on disk changes. Under refuse-start the entries
printed are those readable before the first corruption.

Exit codes: 0 clean (a crash tail alone is clean; an empty WAL directory too), 3 corruption
found and the policy would start, 4 the policy refuses to start, 254 bad argument, missing
directory, or a directory whose files are not WAL segments (not a WAL: a wrong path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import CorruptionRefusedError, StorageError
from .format import parse_segment_name
from .policy import CorruptionPolicy, CorruptionReport
from .scan import list_segments, scan_wal

EXIT_CLEAN = 0
EXIT_CORRUPTION_STARTS = 3
EXIT_REFUSED = 4
EXIT_BAD_ARGUMENT = 254


def _policy(text: str) -> CorruptionPolicy:
    try:
        return CorruptionPolicy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _group(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"group must be a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"group must be a number >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="node data directory, a group directory (group-N) or a WAL directory")
    parser.add_argument("--policy", type=_policy, default=CorruptionPolicy.TruncateToLastGood,
                        help="corruption policy to simulate: truncate-to-last-good (default), "
                             "refuse-start, alert-and-continue")
    parser.add_argument("--group", type=_group, default=0, help="Raft group when DATA_DIR is a node directory (default 0)")


def resolve_wal_dir(path: str, group: int = 0) -> str:
    """Find the WAL directory meant by ``path``; StorageError says what was expected."""
    if not os.path.exists(path):
        raise StorageError(f"{path} does not exist; pass a node data directory, a group directory or a WAL directory")
    if not os.path.isdir(path):
        raise StorageError(f"{path} is not a directory; pass the directory that holds the WAL, not a file")
    try:
        names = os.listdir(path)
    except PermissionError:
        raise StorageError(f"cannot list {path}: permission denied") from None
    if os.path.basename(os.path.normpath(path)) == "wal" or any(parse_segment_name(n) is not None for n in names):
        return path
    for candidate in (os.path.join(path, "wal"), os.path.join(path, f"group-{group}", "wal")):
        if os.path.isdir(candidate):
            return candidate
    raise StorageError(
        f"no WAL under {path}: expected {path}/group-{group}/wal, {path}/wal, or wal-*.seg files in {path}")


def not_wal_files(wal_dir: str) -> list[str]:
    """The files of a WAL directory that has no segment but other files (sorted), else [].

    Such a directory is not a WAL (a wrong path), and must not be reported as a clean, empty
    one. An empty directory is a WAL nothing was written to yet."""
    if list_segments(wal_dir):
        return []
    try:
        return sorted(n for n in os.listdir(wal_dir) if not n.startswith("."))
    except OSError:
        return []


def _exit_code(report: CorruptionReport) -> int:
    if report.refused:
        return EXIT_REFUSED
    return EXIT_CLEAN if report.clean else EXIT_CORRUPTION_STARTS


def run(args: argparse.Namespace) -> int:
    try:
        wal_dir = resolve_wal_dir(args.data_dir, args.group)
    except StorageError as exc:
        print(f"ukehi wal dump: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    strangers = not_wal_files(wal_dir)
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
        print(f"ukehi wal dump: error: {wal_dir} holds no WAL segment (wal-NNNNNNNN.seg), only {shown}: "
              "pass a node data directory, a group directory or a WAL directory", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    try:
        scan = scan_wal(wal_dir, args.policy, with_locations=True)
        entries, locations, report = scan.entries, scan.locations or [], scan.report
    except CorruptionRefusedError as exc:
        entries, locations, report = exc.entries, exc.locations, exc.report  # type: ignore[assignment]
        print(f"ukehi wal dump: {exc}", file=sys.stderr)
    except StorageError as exc:
        print(f"ukehi wal dump: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    out = sys.stdout
    dumps = json.dumps
    try:
        for entry, (segment, offset, version) in zip(entries, locations):
            out.write(dumps({
                "segment": segment, "offset": offset, "version": version, "term": entry.term,
                "index": entry.index, "fencing_token": entry.fencing_token, "command": entry.command.hex(),
            }) + "\n")
        out.write(dumps({"corruption_report": report.to_dict()}) + "\n")
        out.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of the dump.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if not report.clean:
        print(report.summary(), file=sys.stderr)
    return _exit_code(report)
