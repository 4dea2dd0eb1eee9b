"""``python -m cloud.demo.totp [--data-dir build/demo]``: the demo operator's
current two-step login code.

Operators log in with a password and a code from an authenticator app
(docs/security.md). The demo enrols its operator with a key made per run
and kept in ``<data-dir>/credentials.json``; this prints the code for now
and how many seconds it stays good, so trying the demo needs no phone.
Exit 1 when the file is missing or holds no key (no demo ran there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pyotp


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cloud.demo.totp", description="The demo operator's current login code."
    )
    p.add_argument("--data-dir", type=Path, default=Path("build/demo"), help="the demo's files")
    args = p.parse_args(argv)
    path = args.data_dir / "credentials.json"
    try:
        secret = json.loads(path.read_text(encoding="utf-8"))["operator"]["totp_secret"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"no demo operator key in {path}: {err}", file=sys.stderr)
        return 1
    totp = pyotp.TOTP(secret)
    left = totp.interval - int(time.time()) % totp.interval
    print(f"{totp.now()}  (good for {left} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
