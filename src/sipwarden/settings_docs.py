"""Documentation of settings dataclasses, read from the comments above their fields.

The detectors' settings (``sipwarden.detect.*Settings``) are documented the
way the house writes code: a comment above each field says what it is and why
its default has that value. :func:`field_docs` reads those comments so the
configuration model and the generated example configuration
(``sipwarden config example``) show the same words: the documentation lives
in one place, where the field is declared.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

__all__ = ["field_docs"]

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=]+?(?:=.*)?$")


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its documentation}`` for a settings dataclass.

    The comment lines above a field (and an inline comment after it) document
    it; a field without a comment of its own shares the comment of the field
    declared just above it (``global_limit`` then ``global_window``). A class
    that documents its fields in its docstring instead, as ````name``: text``
    entries, is read that way.
    """
    names = [field.name for field in dataclasses.fields(cls)]
    docs = _docstring_entries(cls.__doc__ or "", set(names))
    own: dict[str, str] = {}
    roots: dict[str, str] = {}  # the field whose comment a field shares
    pending: list[str] = []
    previous: str | None = None
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match is None or match.group(1) not in names:
            if stripped and not line[:1].isspace():
                pending = []
            continue
        name = match.group(1)
        inline = stripped.partition("  #")[2].strip()
        text = " ".join(part for part in (*pending, inline) if part)
        if text:
            own[name] = text
            roots[name] = name
        elif previous is not None and previous in roots and name not in docs:
            root = roots[name] = roots[previous]
            own[name] = f"As for {root}: {own[root]}"
        pending = []
        previous = name
    docs.update(own)
    for name in names:
        if name not in docs:  # documented only inside another field's entry
            mentioned = [other for other, text in docs.items() if f"``{name}``" in text]
            if mentioned:
                docs[name] = f"See {mentioned[0]}: {docs[mentioned[0]]}"
    return docs


_DOC_ENTRY = re.compile(r"``(\w+)``:\s*(.*?)(?=\n\s*``\w+``:|\Z)", re.DOTALL)


def _docstring_entries(doc: str, names: set[str]) -> dict[str, str]:
    return {
        name: " ".join(text.split())
        for name, text in _DOC_ENTRY.findall(inspect.cleandoc(doc))
        if name in names
    }
