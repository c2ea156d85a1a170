"""Secret tokens: one per reader and one for the admin; the server keeps only their digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from evaluator.vtt.study import ADMIN, Study

TOKEN_BYTES = 32
"""Random bytes per token (``secrets.token_urlsafe``): 43 characters in a link."""


def new_token() -> str:
    """A fresh secret token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 of a token, as stored in ``study.json``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identify(token: str | None, study: Study) -> str | None:
    """The reader name (or :data:`ADMIN`) whose token this is, else None.

    Every stored digest is compared in constant time, with no early exit, so the time taken
    says nothing about which token (if any) was close.
    """
    if not token:
        return None
    digest = token_digest(token)
    found = None
    candidates = [(ADMIN, study.admin_sha256)] + [(r.name, r.token_sha256) for r in study.readers]
    for name, stored in candidates:
        if hmac.compare_digest(digest, stored):
            found = name
    return found
