"""LaTeX answer strings: the last `\\boxed{}` and presentation stripped (math-verify parses them)."""

from __future__ import annotations

import re


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`), braces balanced."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    for match in reversed(starts):
        rest = text[match.end():]
        if rest.startswith("{"):
            depth = 0
            for i, char in enumerate(rest):
                depth += {"{": 1, "}": -1}.get(char, 0)
                if depth == 0:
                    return rest[1:i].strip()
            continue  # unbalanced: try an earlier one
        spaced = re.match(r"\s+([^\s$]+)", rest)
        if spaced:
            return spaced.group(1)
    return None


def unwrap(text: str, command: str) -> str:
    """Replace `\\command{x}` by `x` (balanced braces), for every occurrence."""
    while True:
        start = text.find("\\" + command + "{")
        if start < 0:
            return text
        open_at = start + len(command) + 1
        depth = 0
        for i in range(open_at, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                text = text[:start] + text[open_at + 1:i] + text[i + 1:]
                break
        else:
            return text


def clean_latex(answer: str) -> str:
    """Strip presentation from an answer: $, spaces, \\left/\\right, \\text{}, degrees, %, "x=" ..."""
    s = answer.strip()
    s = s.replace("\\$", "").replace("$", "")
    for cmd in ("text", "textbf", "mathrm", "mbox", "boxed"):
        s = unwrap(s, cmd)
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)           # "x = 5" -> "5"
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")
