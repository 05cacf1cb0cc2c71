"""The durable-cut rule on hand-made records (checkers/whitebox/durable_cut.py, fed by
ukehi.sim.fs.SimFS's ``starts`` and ``damaged``): a replay that drops fsynced, undamaged
bytes is caught with an explanation naming node, file, durable size, cut offset and time;
a cut a replay makes over damage it met, a torn tail above the durable size, and bytes
appended after a replay first met damage are told apart."""

from __future__ import annotations

from checkers.whitebox.durable_cut import check_durable_cut
from ukehi.nodelog import format_line
from ukehi.sim.fs import SimFS

SEG = "/sim/n1/data/group-0/wal/wal-00000001.seg"
PIDS = {"n1": 1000}


def log(*events: tuple[str, dict]) -> str:
    return "".join(format_line("info", "n1", ev, fields, 0.0) + "\n" for ev, fields in events)


def starting(incarnation: int) -> tuple[str, dict]:
    return ("starting", {"pid": 1000 + incarnation, "data_dir": "/sim/n1/data", "policy": "truncate-to-last-good"})


def cut(offset: int, length: int | None, kind: str = "torn-tail", action: str = "cut") -> tuple[str, dict]:
    return ("corruption-report", {"policy": "truncate-to-last-good", "segment": "wal-00000001.seg", "offset": offset,
                                  "kind": kind, "action": action, "index": None, "length": length, "detail": "x"})


def test_a_cut_below_the_durable_size_of_an_undamaged_file_is_caught_and_explained():
    starts = {"n1": [(0.0, {}), (2.5, {SEG: (500, ())}), (4.0, {SEG: (900, ())})]}
    logs = {"n1": log(starting(1), starting(2), cut(520, 40), starting(3), cut(520, 380, "crc-mismatch"))}
    out = check_durable_cut(logs, starts, {}, PIDS)
    assert out["valid"] is False and out["cuts"] == 2
    [v] = out["violations"]
    assert (v["node"], v["file"], v["incarnation"], v["durable"], v["offset"]) == \
        ("n1", "group-0/wal/wal-00000001.seg", 3, 900, 520)
    for text in ("n1", "group-0/wal/wal-00000001.seg", "offset 520", "durable size 900", "t=4.000", "520..900"):
        assert text in out["explanation"], text


def test_a_torn_tail_cut_at_or_above_the_durable_size_is_allowed():
    starts = {"n1": [(0.0, {}), (2.5, {SEG: (500, ())})]}
    for offset in (500, 612):
        logs = {"n1": log(starting(1), starting(2), cut(offset, 30))}
        out = check_durable_cut(logs, starts, {}, PIDS)
        assert out["valid"] is True and out["cuts"] == 1, out


def test_a_cut_over_damage_a_replay_meets_first_is_excused_but_not_bytes_appended_after_it():
    damaged = {SEG: [(2.0, 700)]}
    # Incarnation 2 meets the damage at 700 with the file at 900 bytes: its cut is excused.
    first = {"n1": [(0.0, {}), (2.5, {SEG: (900, ((700, 900),))})]}
    logs = {"n1": log(starting(1), starting(2), cut(680, 220, "crc-mismatch"))}
    assert check_durable_cut(logs, first, damaged, PIDS)["valid"] is True
    # The cut was never made on disk; appends grew the file to 1500 bytes, fsynced: the
    # same cut at incarnation 3 drops 900..1500, which no damage explains.
    again = {"n1": first["n1"] + [(6.0, {SEG: (1500, ((700, 900),))})]}
    logs = {"n1": log(starting(1), starting(2), cut(680, 220, "crc-mismatch"), starting(3),
                      cut(680, 820, "crc-mismatch"))}
    out = check_durable_cut(logs, again, damaged, PIDS)
    assert out["valid"] is False
    [v] = out["violations"]
    assert (v["incarnation"], v["extent"], v["end"]) == (3, 900, 1500)
    assert "900..1500" in out["explanation"]


def test_damage_while_the_incarnation_ran_excuses_its_cut_and_a_skip_inside_damage_is_allowed():
    starts = {"n1": [(0.0, {}), (2.5, {SEG: (900, ())})]}
    logs = {"n1": log(starting(1), starting(2), cut(300, 600, "crc-mismatch"))}
    assert check_durable_cut(logs, starts, {SEG: [(2.5, 310)]}, PIDS)["valid"] is True
    assert check_durable_cut(logs, starts, {SEG: [(1.0, 310)]}, PIDS)["valid"] is False  # met by no replay
    skip = {"n1": [(0.0, {}), (2.5, {SEG: (900, ((310, 600),))})]}
    logs = {"n1": log(starting(1), starting(2), cut(300, 40, "crc-mismatch", action="skipped"))}
    assert check_durable_cut(logs, skip, {SEG: [(1.0, 310)]}, PIDS)["valid"] is True


def test_simfs_records_durable_length_and_live_damage_per_start():
    fs = SimFS()
    t = [0.0]
    fs.clock = lambda: t[0]
    fs.register_node("/sim/n1")
    fs.makedirs("/sim/n1/data/group-0/wal")
    fd = fs.open(SEG, fs.O_WRONLY | fs.O_CREAT | fs.O_APPEND)
    fs.write(fd, b"h" * 100)
    fs.fsync(fd)
    dfd = fs.open("/sim/n1/data/group-0/wal", fs.O_RDONLY)
    fs.fsync(dfd)
    fs.write(fd, b"x" * 50)  # never fsynced: a torn prefix of it may survive the crash

    class Torn:  # always tear, keep the whole unsynced append
        def random(self) -> float:
            return 0.0

        def randrange(self, a: int, b: int) -> int:
            return b - 1

    fs.crash("/sim/n1", Torn(), torn_probability=1.0)
    t[0] = 1.0
    fs.revive("/sim/n1")
    assert fs.read_bytes(SEG) == b"h" * 100 + b"x" * 50
    assert fs.starts["/sim/n1"][-1] == (1.0, {SEG: (100, ())})  # the torn tail is not durable
    fs.damage(SEG, "bitflip", __import__("random").Random(1), skip=20)
    at = fs.damaged[SEG][0][1]
    t[0] = 2.0
    fs.revive("/sim/n1")
    assert fs.starts["/sim/n1"][-1] == (2.0, {SEG: (100, ((at, 150),))})
    fd = fs.open(SEG, fs.O_RDWR)
    fs.ftruncate(fd, at)  # the replay's cut removes the damage it met
    fs.fsync(fd)
    t[0] = 3.0
    fs.revive("/sim/n1")
    assert fs.starts["/sim/n1"][-1] == (3.0, {SEG: (at, ())})
