"""Text copied from files (folder and file names, summaries, manifests) into the Markdown DNSD writes: a cell stays
one cell, a code span one span, and no HTML or link gets through."""
import re

SPECIAL = re.compile(r"([\\`*\[\]|<>&])")  # what could end a cell or a span, emphasise, link, or start HTML


def escaped(value):
    """value as literal Markdown text on one line (white space folded, SPECIAL escaped)."""
    return SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def code(value, cell=False):
    """value, on one line, as a code span that no backtick in it can end (cell: in a table, whose pipes GFM splits
    on even inside a span)."""
    text = " ".join(str(value).split())
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return fence + (padded.replace("|", "\\|") if cell else padded) + fence
