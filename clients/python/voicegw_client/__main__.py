"""`python -m voicegw_client talk ...`: the SDK's CLI without the server installed."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voicegw_client import talk

USAGE = "usage: python -m voicegw_client talk [options]  (see: talk --help)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["talk"]:
        print(USAGE, file=sys.stderr)
        return 1
    return talk.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
