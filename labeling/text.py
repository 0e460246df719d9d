"""Text as the services store it."""

from __future__ import annotations


def newlines_normalise(text: str) -> str:
    """Line breaks as `\\n` only. Browsers send a textarea's line breaks as `\\r\\n` (the HTML
    standard's form submission rule), and SFT data, exports and Markdown would carry the `\\r`;
    a lone `\\r` (old Mac text pasted in) becomes `\\n` too."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
