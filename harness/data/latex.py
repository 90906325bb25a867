"""LaTeX answer strings: the last `\\boxed{}`, presentation stripped, and a parser into sympy."""

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


def braced(s: str, start: int) -> tuple[str, int]:
    """The `{...}` group (or single character) at s[start]; returns (content, index after)."""
    if start < len(s) and s[start] == "{":
        depth = 0
        for i in range(start, len(s)):
            depth += {"{": 1, "}": -1}.get(s[i], 0)
            if depth == 0:
                return s[start + 1:i], i + 1
        raise ValueError("unbalanced braces")
    if start < len(s):
        return s[start], start + 1
    raise ValueError("missing argument")


def latex_to_sympy(answer: str):
    """Parse a cleaned LaTeX answer into a sympy expression (fractions, roots, powers, pi)."""
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    def convert(s: str) -> str:
        out, i = [], 0
        while i < len(s):
            if s.startswith("\\frac", i):
                num, i = braced(s, i + 5)
                den, i = braced(s, i)
                out.append(f"(({convert(num)})/({convert(den)}))")
            elif s.startswith("\\sqrt", i):
                i += 5
                index = "2"
                if i < len(s) and s[i] == "[":
                    close = s.index("]", i)
                    index, i = s[i + 1:close], close + 1
                body, i = braced(s, i)
                out.append(f"(({convert(body)})**(1/({convert(index)})))")
            else:
                out.append(s[i])
                i += 1
        return "".join(out)

    s = convert(answer)
    for latex, plain in (("\\pi", "pi"), ("\\infty", "oo"), ("\\cdot", "*"), ("\\times", "*"),
                         ("\\div", "/"), ("\\ln", "log"), ("\\log", "log"), ("\\sin", "sin"),
                         ("\\cos", "cos"), ("\\tan", "tan"), ("{", "("), ("}", ")")):
        s = s.replace(latex, plain)
    if "\\" in s:
        raise ValueError(f"unsupported LaTeX in {answer!r}")
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return parse_expr(s, transformations=transformations, evaluate=True)

