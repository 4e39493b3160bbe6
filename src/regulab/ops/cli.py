"""``regulab build``: build the C++ dropout op for this machine now.

Eager dropout otherwise builds it on its first training-mode call (about a minute,
once per machine, source and torch version). Exit code 0 when the op is ready or
turned off with ``REGULAB_NATIVE=0``, 1 when it cannot be built (dropout then runs
on the numba kernel, with the same values).
"""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("build", help="build the C++ dropout op for this machine (else built on first use)",
                              description=__doc__.split("\n\n")[1])
    p.set_defaults(func=run)


def run(args) -> int:
    from . import _native

    if not _native.enabled():
        print("regulab build: REGULAB_NATIVE=0, the C++ dropout op is off; dropout runs on the numba kernel")
        return 0
    module = _native.load()
    if module is None:
        print("regulab build: the C++ dropout op could not be built (see the warning above); "
              "dropout runs on the numba kernel", file=sys.stderr)
        return 1
    print(f"regulab build: C++ dropout op ready ({module.__file__})")
    return 0
