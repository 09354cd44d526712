"""Scrubbing credentials out of text that evalfleet keeps or shows (sample errors, run errors,
summaries, logs): a known secret wherever it appears, and the shapes secrets usually take."""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 2000
MASK = "***"
_PATTERNS = (
    # Provider API keys as issued (OpenAI `sk-...`, Anthropic `sk-ant-...`, and the like).
    re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?key|secret|password|passwd|token)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"),
    # Credentials inside a URL: scheme://user:password@host
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
)


def scrub(text: str, *secrets: str | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` with every given secret and every credential-shaped token masked, cut to `limit`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _PATTERNS[0].sub(MASK, text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _PATTERNS[3].sub(MASK, text)
    return text[:limit]


def mask_url(url: str) -> str:
    """A service URL fit to print: its password (if any) masked."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return _PATTERNS[3].sub(MASK, url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
