"""Reading the curl examples of the user guide (`docs/api.md`): fenced code
blocks, here-documents and shell words. Shared by `test_api_doc.py` (every
operation has an example) and `test_api_guide_replay.py` (the examples, run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
GUIDE = DOCS / "api.md"

FENCE = re.compile(r"^(```+|~~~+)([^\n]*)\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
# Shell punctuation that ends a command: curl's arguments stop there.
SEPARATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", "<<", "<<-", "|&"}
DATA_OPTIONS = {
    "-d",
    "--data",
    "--data-raw",
    "--data-binary",
    "--data-urlencode",
    "--data-ascii",
    "--json",
    "-F",
    "--form",
}


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks, in document order."""
    return [m.group(3) for m in FENCE.finditer(markdown)]


def without_heredocs(script: str) -> str:
    """The script without the bodies of its here-documents (they are data)."""
    out: list[str] = []
    until: str | None = None
    for line in script.splitlines():
        if until is not None:
            if line.strip() == until:
                until = None
            continue
        out.append(line)
        found = HEREDOC.search(line)
        if found:
            until = found.group(2)
    return "\n".join(out)


def tokens(script: str) -> list[str]:
    """The shell words of a script (quotes removed, punctuation split off)."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)
