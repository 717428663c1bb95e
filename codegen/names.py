"""Names from the model file on their way into generated C and onto the serial line.

A model file is input like any other: its name goes into a C string literal, a C comment and the
device's m-name-[...] reply; tensor names become C identifiers and comments. Each is escaped
where escaping keeps its meaning and refused (one-line GraphError) where it cannot."""
from __future__ import annotations

import re

from tinylm.graph import GraphError


def c_ident(name: str, prefix: str) -> str:
    return prefix + re.sub(r"[^0-9A-Za-z_]", "_", name)


NAME_MAX = 64   # model name characters: one m-name-[tinylm-...] line stays short


def c_idents(names, prefix: str, what: str) -> dict[str, str]:
    """C identifiers of names; two names that map to one identifier are refused here, by name,
    rather than by gcc as a redefinition."""
    out, owner = {}, {}
    for name in names:
        ident = c_ident(name, prefix)
        if ident in owner:
            a, b = sorted((owner[ident], name))
            raise GraphError(f"{what} {a!r} and {b!r} both become the C identifier {ident}; rename one of them")
        owner[ident], out[name] = name, ident
    return out


_C_ESCAPES = str.maketrans({"\"": "\\\"", "\\": "\\\\", "?": "\\?"})


def c_string(text: str) -> str:
    """A C string literal of printable ASCII text. '?' is escaped too: -std=c11 turns the trigraph
    ??/ into a backslash, which would escape the closing quote."""
    return '"' + text.translate(_C_ESCAPES) + '"'


def c_comment(text: str) -> str:
    """Text safe inside /* ... */: printable ASCII only, and neither */ (ends the comment early:
    code injection) nor /* (a -Wcomment warning) survives."""
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text.replace("*/", "* /").replace("/*", "/ *")


def check_model_name(name: str) -> None:
    """The device prints the name in m-name-[...] and m-tinylm-model-[...] lines: printable ASCII
    only (a CR/LF would end the line early and desynchronise the host), 1..NAME_MAX of it."""
    if not 1 <= len(name) <= NAME_MAX or not all(" " <= c <= "~" for c in name):
        raise GraphError(f"model name {name!r} must be 1..{NAME_MAX} printable ASCII characters "
                         "(it travels in protocol lines); set metadata tinylm.name")
