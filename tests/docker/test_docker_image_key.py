"""The node image's cache key: what goes into the image, and nothing else (no engine needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from harness.image import image_key, wheel_content_hash


def make_wheel(path: Path, files: dict[str, bytes], date: tuple[int, int, int, int, int, int]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=date), data)
    return path


def test_zip_dates_and_member_order_do_not_change_the_wheel_hash(tmp_path: Path) -> None:
    files = {"ukehi/__init__.py": b"__version__ = '0.1.0'\n", "ukehi/node.py": b"print('node')\n"}
    a = make_wheel(tmp_path / "a.whl", files, (2020, 1, 1, 0, 0, 0))
    b = make_wheel(tmp_path / "b.whl", dict(reversed(list(files.items()))), (2026, 11, 27, 6, 0, 0))
    assert a.read_bytes() != b.read_bytes()
    assert wheel_content_hash(a) == wheel_content_hash(b)


def test_a_changed_byte_or_name_changes_the_wheel_hash(tmp_path: Path) -> None:
    date = (2020, 1, 1, 0, 0, 0)
    base = wheel_content_hash(make_wheel(tmp_path / "a.whl", {"m.py": b"x = 1\n"}, date))
    assert wheel_content_hash(make_wheel(tmp_path / "b.whl", {"m.py": b"x = 2\n"}, date)) != base
    assert wheel_content_hash(make_wheel(tmp_path / "c.whl", {"n.py": b"x = 1\n"}, date)) != base


def test_the_image_key_follows_the_dockerfile_the_start_script_and_the_base(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", {"m.py": b"x = 1\n"}, (2020, 1, 1, 0, 0, 0))
    dockerfile, script = tmp_path / "Dockerfile", tmp_path / "ukehi-start"
    dockerfile.write_text("FROM base\n")
    script.write_text("#!/bin/sh\n")
    key = image_key(wheel, dockerfile, script, "sha256:base1")
    assert image_key(wheel, dockerfile, script, "sha256:base1") == key
    assert image_key(wheel, dockerfile, script, "sha256:base2") != key
    dockerfile.write_text("FROM base\nRUN true\n")
    assert image_key(wheel, dockerfile, script, "sha256:base1") != key
    dockerfile.write_text("FROM base\n")
    script.write_text("#!/bin/sh\nexit 0\n")
    assert image_key(wheel, dockerfile, script, "sha256:base1") != key


def test_a_run_warns_when_the_image_carries_other_sources() -> None:
    from harness.backends.docker import stale_image_warning
    from harness.image import SOURCE_LABEL, source_hash

    assert stale_image_warning("img:1", {}) is None  # not built by `image build`: nothing to compare
    assert stale_image_warning("img:1", {SOURCE_LABEL: source_hash()}) is None
    warning = stale_image_warning("img:1", {SOURCE_LABEL: "0" * 24})
    assert warning is not None and "img:1" in warning and "ukehi-jepsen image build --offline" in warning


def test_the_source_hash_of_a_wheel_equals_that_of_its_tree(tmp_path: Path) -> None:
    from harness.image import source_hash, source_hash_of_wheel

    tree = tmp_path / "tree"
    (tree / "ukehi").mkdir(parents=True)
    (tree / "ukehi" / "__init__.py").write_text("x = 1\n")
    (tree / "harness" / "__pycache__").mkdir(parents=True)
    (tree / "harness" / "__pycache__" / "junk.py").write_text("ignored\n")
    wheel = make_wheel(tmp_path / "w.whl", {"ukehi/__init__.py": b"x = 1\n",
                                             "ukehi_jepsen-0.1.0.dist-info/RECORD": b""}, (2020, 1, 1, 0, 0, 0))
    assert source_hash_of_wheel(wheel) == source_hash(tree)
    (tree / "ukehi" / "__init__.py").write_text("x = 2\n")
    assert source_hash_of_wheel(wheel) != source_hash(tree)
