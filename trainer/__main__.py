"""``torchrun [...] -m trainer [--key=value ...]``, ``trainer [...]`` and ``trainer prepare [...]``."""

from __future__ import annotations

import logging
import os
import sys

from trainer.config import ConfigError, parse_args, usage


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        from trainer.prepare import main as prepare_main

        return prepare_main(argv[1:])
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage())
        return 0
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_args(argv)
        from trainer.train import exit_code, run

        result = run(config)
    except ConfigError as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
