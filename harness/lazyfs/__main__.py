"""`python -m harness.lazyfs BACKING MOUNTPOINT`: serve LazyFS in the foreground until unmounted."""

from __future__ import annotations

import sys

from .fs import mount


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m harness.lazyfs BACKING_DIR MOUNTPOINT", file=sys.stderr)
        return 254
    mount(argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
