"""Fixes that work, added to the validator's problems where its own words lead nowhere. Pure.

* **YAML 1.1 numbers.** PyYAML (and so W&B's own loader) reads ``1e-4`` as the *string*
  ``"1e-4"``: YAML 1.1 floats need a dot and a signed exponent. ``min: 1e-4`` then fails as "not a
  number"; the hint gives the spelling that parses (``1.0e-4``, ``1.0e+4``), checked with PyYAML.
* **A file without ``program``.** W&B's default command runs ``${program}``; "write program:
  train.py" only leads to every attempt failing with ``can't open file``, unless that script
  exists where the trials run. The hint says where, and how to run the reference trainer instead
  — with its macros quoted: ``command: [${env}, …]`` unquoted is itself a YAML syntax error.
"""

from __future__ import annotations

import re

import yaml

TRAINER_COMMAND = '["${env}", "${interpreter}", "-m", "trainer", "${args}"]'
UNQUOTED_COMMAND = "[${env}, ${interpreter}, -m, trainer, ${args}]"
_NOT_A_NUMBER = re.compile(r"^(?P<head>.*)'(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+)' is not a number(?P<rest>.*)$")


def yaml11_float(text: str) -> str | None:
    """The YAML 1.1 spelling of a float written as ``1e-4``: ``1.0e-4`` (None if not such a float)."""
    match = re.fullmatch(r"([-+]?)(\d+\.?\d*|\.\d+)[eE]([-+]?)(\d+)", text.strip())
    if not match:
        return None
    sign, mantissa, exp_sign, exponent = match.groups()
    if mantissa.startswith("."):
        mantissa = "0" + mantissa
    if "." not in mantissa:
        mantissa += ".0"
    elif mantissa.endswith("."):
        mantissa += "0"
    fixed = f"{sign}{mantissa}e{exp_sign or '+'}{exponent}"
    return fixed if isinstance(yaml.safe_load(fixed), float) else None


def improve(problem: str) -> str:
    """``problem`` with a working fix added, when we know one; else unchanged."""
    match = _NOT_A_NUMBER.match(problem)
    if match:
        fixed = yaml11_float(match.group("value"))
        if fixed:
            value = match.group("value")
            return (f"{match.group('head')}'{value}' is not a number — YAML reads {value} as text (a YAML 1.1 "
                    f"float needs a dot and a signed exponent): write {fixed}")
    if problem.startswith("program:") and "missing" in problem and UNQUOTED_COMMAND in problem:
        return problem.replace(UNQUOTED_COMMAND, TRAINER_COMMAND)  # unquoted, that flow list is a YAML error
    if problem.startswith("program:") and "missing" in problem and TRAINER_COMMAND not in problem:
        return (f"{problem} — a script that exists where the trials run (the local backend's working directory, "
                "or the image's); or run the reference trainer with command: " + TRAINER_COMMAND +
                " as examples/sweep.yaml does")
    return problem
