"""`ukehi wal dump`: JSON lines per kept entry, a report line, exit codes, read-only."""

import json
import os

import pytest

from ukehi.cli import main

from walfiles import build_v2_log, entry, flip, tree_digest, v1_frame, write_segment

LAYOUT = [[1, 2, 3], [4, 5, 6]]


def dump(capsys, *args):
    code = main(["wal", "dump", *args])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    return code, lines[:-1], lines[-1]["corruption_report"] if lines else None, err


def node_dir(tmp_path, group=0):
    wal_dir = tmp_path / "node" / f"group-{group}" / "wal"
    where_is = build_v2_log(str(wal_dir), LAYOUT)
    return tmp_path / "node", wal_dir, where_is


def test_clean_wal_exit_0_and_entry_fields(tmp_path, capsys):
    node, wal_dir, where_is = node_dir(tmp_path)
    code, entries, report, _ = dump(capsys, str(node))
    assert code == 0
    assert report["clean"] is True and report["entries_kept"] == 6
    assert [e["index"] for e in entries] == [1, 2, 3, 4, 5, 6]
    term, index, cmd, token = entry(5)
    path, offset = where_is[5]
    assert entries[4] == {"segment": os.path.basename(path), "offset": offset, "version": 2, "term": term,
                          "index": index, "fencing_token": token, "command": cmd.hex()}


def test_accepts_group_dir_and_wal_dir(tmp_path, capsys):
    node, wal_dir, _ = node_dir(tmp_path)
    for target in (node / "group-0", wal_dir):
        code, entries, _, _ = dump(capsys, str(target))
        assert code == 0 and len(entries) == 6


def test_group_option(tmp_path, capsys):
    node, _, _ = node_dir(tmp_path, group=3)
    code, entries, _, _ = dump(capsys, str(node), "--group", "3")
    assert code == 0 and len(entries) == 6
    code, _, _, err = dump(capsys, str(node))  # group 0 has no WAL
    assert code == 254 and "group-0/wal" in err


def test_v1_entries_show_version_1(tmp_path, capsys):
    write_segment(str(tmp_path), 1, 1, [v1_frame(1, 1, b"x")])
    code, entries, _, _ = dump(capsys, str(tmp_path))
    assert code == 0 and entries[0]["version"] == 1 and entries[0]["fencing_token"] == 0


@pytest.mark.parametrize("policy, code, kept", [
    ("truncate-to-last-good", 3, [1, 2, 3]),
    ("TruncateToLastGood", 3, [1, 2, 3]),
    ("alert-and-continue", 3, [1, 2, 3, 5, 6]),
    ("refuse-start", 4, [1, 2, 3]),
    ("RefuseStart", 4, [1, 2, 3]),
])
def test_corruption_exit_codes_and_nothing_changes(tmp_path, capsys, policy, code, kept):
    node, wal_dir, where_is = node_dir(tmp_path)
    path, offset = where_is[4]
    flip(path, offset + 14)
    before = tree_digest(str(node))
    got, entries, report, err = dump(capsys, str(node), "--policy", policy)
    assert got == code
    assert [e["index"] for e in entries] == kept
    assert report["findings"][0]["kind"] == "crc-mismatch"
    assert report["findings"][0]["segment"] == "wal-00000002.seg"
    assert report["findings"][0]["offset"] == offset
    assert report["refused"] is (code == 4)
    assert "crc-mismatch" in err
    assert tree_digest(str(node)) == before  # a dump never writes


def test_torn_tail_alone_is_clean_and_not_cut_by_dump(tmp_path, capsys):
    node, wal_dir, where_is = node_dir(tmp_path)
    path, offset = where_is[6]
    os.truncate(path, offset + 7)
    before = tree_digest(str(node))
    code, entries, report, _ = dump(capsys, str(node), "--policy", "refuse-start")
    assert code == 0 and len(entries) == 5
    assert report["findings"][0]["kind"] == "torn-tail"
    assert tree_digest(str(node)) == before


@pytest.mark.parametrize("args", [
    ["--policy", "nonsense"],
    ["--group", "-1"],
    ["--group", "x"],
])
def test_bad_arguments_exit_254(tmp_path, capsys, args):
    node, _, _ = node_dir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["wal", "dump", str(node), *args])
    assert exc.value.code == 254


def test_missing_or_wrong_directory_exit_254(tmp_path, capsys):
    code, _, _, err = dump(capsys, str(tmp_path / "nope"))
    assert code == 254 and "does not exist" in err
    (tmp_path / "file").write_text("x")
    code, _, _, err = dump(capsys, str(tmp_path / "file"))
    assert code == 254 and "not a directory" in err
    (tmp_path / "empty").mkdir()
    code, _, _, err = dump(capsys, str(tmp_path / "empty"))
    assert code == 254 and "no WAL" in err


def test_empty_wal_dir_is_clean(tmp_path, capsys):
    (tmp_path / "wal").mkdir()
    code, entries, report, _ = dump(capsys, str(tmp_path / "wal"))
    assert code == 0 and entries == [] and report["entries_kept"] == 0
