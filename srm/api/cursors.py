"""Listing cursors the caller cannot forge: the store's cursor plus an HMAC of it and the account.

The store's cursor (srm/listing.py) says where a walk stands; a caller could write one by hand,
or take one from another account's walk. So the API hands out ``<cursor>.<tag>``, where the tag
is HMAC-SHA256 (first 16 bytes, base64url) of the account and the store's cursor, and answers
SRM-0002 to any cursor whose tag does not match: one it did not make, changed in any way, or
made for another account. Every process of a deployment must sign with the same key:

- ``server.cursor_key`` (``SRM_SERVER_CURSOR_KEY``) when set;
- else a key derived from each HS secret (``auth.secret``, ``auth.secrets``) and each operator
  key: cursors are signed with the first and accepted under any, so rotating secrets as
  docs/identity.md says keeps walks under way valid;
- else (a JWKS deployment with no operator keys) a random key per `srm serve`, which its
  workers share (srm/server.py): a walk does not survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from srm.config import Settings
from srm.errors import MalformedRequest

_LABEL = b"srm listing cursor v1"
_TAG_BYTES = 16
_TAG_LENGTH = 22  # base64url of 16 bytes, unpadded


def key_material(settings: Settings) -> tuple[str, ...]:
    """The configured secrets cursor keys come from, the signing one first; () if none."""
    if settings.server.cursor_key:
        return (settings.server.cursor_key,)
    return tuple(dict.fromkeys((*settings.auth.hmac_secrets, *settings.operator.keys)))


class CursorSigner:
    """Signs the store's cursors for one account and opens signed ones."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        material = [s.encode() for s in secrets] or [os.urandom(32)]
        self._keys = [hmac.new(m, _LABEL, hashlib.sha256).digest() for m in material]

    @classmethod
    def of(cls, settings: Settings) -> CursorSigner:
        return cls(key_material(settings))

    def sign(self, account_id: str, cursor: str) -> str:
        return f"{cursor}.{self._tag(self._keys[0], account_id, cursor)}"

    def open(self, account_id: str, value: str) -> str:
        """The store's cursor in *value*; SRM-0002 unless this service made it for this
        account."""
        cursor, dot, tag = value.rpartition(".")
        if dot and cursor and len(tag) == _TAG_LENGTH and tag.isascii():
            for key in self._keys:
                if hmac.compare_digest(tag, self._tag(key, account_id, cursor)):
                    return cursor
        raise MalformedRequest("cursor is not one this listing gave out")

    @staticmethod
    def _tag(key: bytes, account_id: str, cursor: str) -> str:
        account = account_id.encode("utf-8", "surrogatepass")
        message = b"%d:%s%s" % (len(account), account, cursor.encode("utf-8", "surrogatepass"))
        digest = hmac.new(key, message, hashlib.sha256).digest()[:_TAG_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
