"""Print the pip requirements of sweepq from pyproject.toml, one per line, minus excluded names.

Used by the Dockerfiles and infra/aws/build_lambda_zip.sh so that images install exactly the
project's declared dependencies without a second copy of the list:

    python docker/requirements.py                      # core deps (dispatcher image, Lambda zip)
    python docker/requirements.py --extra trainer --exclude torch   # trainer image: torch from the base

Standard library only (tomllib: Python >= 3.11, as the project requires).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement (``Torch==2.1`` → ``torch``)."""
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, *, extras: list[str], exclude: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"--extra {extra}: not in [project.optional-dependencies] ({', '.join(optional)})")
        wanted += optional[extra]
    dropped = {requirement_name(name) for name in exclude}
    out: list[str] = []
    for requirement in wanted:
        if requirement_name(requirement) not in dropped and requirement not in out:
            out.append(requirement)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="optional-dependency group to add")
    parser.add_argument("--exclude", action="append", default=[], help="distribution name to leave out")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{line}\n" for line in requirements(args.pyproject, extras=args.extra, exclude=args.exclude)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
