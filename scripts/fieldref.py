#!/usr/bin/env python3
"""Generate the README's field reference of ``Transaction``, ``Account``, ``Hold`` and
``LedgerEvent`` from the models themselves, so it cannot drift.

    python scripts/fieldref.py          # rewrite the README section between the markers
    python scripts/fieldref.py --check  # fail (exit 1) when the README section is stale
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE: scripts/fieldref.py -->"
END = "<!-- END GENERATED FIELD REFERENCE -->"
MODELS = ("Transaction", "Account", "Hold", "LedgerEvent")


def type_name(annotation: Any) -> str:
    """A short, readable rendering of a field's type (``int | None``, ``list[Transaction]``)."""
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin is not None:
        return (
            f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
        )
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from mongoledger import models

    lines = [BEGIN]
    for name in MODELS:
        model = getattr(models, name)
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"**`{name}`**: {doc}", "", "| field | type | meaning |", "|---|---|---|"]
        for field, info in model.model_fields.items():
            kind = type_name(info.annotation).replace("|", "\\|")
            text = " ".join((info.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{field}` | {kind} | {text} |")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the README is stale")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        print(f"README.md has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    fresh = pattern.sub(lambda _: render(), text)
    if fresh == text:
        return 0
    if args.check:
        print("README.md field reference is stale: run python scripts/fieldref.py", file=sys.stderr)
        return 1
    README.write_text(fresh, encoding="utf-8")
    print("wrote README.md field reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
