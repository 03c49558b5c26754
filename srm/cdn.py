"""CDN tokens: Akamai EdgeAuth (Token Auth 2.0) tokens bound to a session.

A token is ``st=<start>~exp=<expiry>~acl=<acl>~id=<sessionId>~hmac=<hex>``: the fields in
the order the reference implementation (the ``akamai-edgeauth`` package) writes them, and
``hmac`` the HMAC (``cdn.algorithm``) with the hex key ``cdn.key`` of the text before
``~hmac=``. An edge checks the hmac, ``st`` <= now < ``exp``, and that the requested path
matches ``acl``. ``exp`` is the session's deadline in whole seconds, rounded up, plus
``cdn.slack``: the revocation feed (srm/lua/_events.lua, ``revoke``) computes the same.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from srm.config import CdnSettings

# what a value filled into the ACL must not carry as is: the token's field delimiter "~" and
# the ACL delimiter "!", and the ACL wildcard "*" (quote leaves "~" alone; "!" and "*" it
# encodes with safe="")
_TILDE = "%7E"


def encode(value: str) -> str:
    """*value* percent-encoded as RFC 3986 does (only unreserved characters stay), "~"
    included."""
    return quote(value, safe="").replace("~", _TILDE)


def expiry(deadline_ms: int, slack_s: int) -> int:
    """A token's ``exp`` for a session whose deadline is *deadline_ms*."""
    return -(-deadline_ms // 1000) + slack_s


class CdnTokens:
    """Mints the token of a session from the [cdn] settings."""

    def __init__(self, settings: CdnSettings) -> None:
        self._key = bytes.fromhex(settings.key)
        self._digest = getattr(hashlib, settings.algorithm)
        self._slack = settings.slack
        self._acl = settings.acl
        self.names_content = "{contentID}" in settings.acl  # the ACL needs the contentID

    def acl(self, session_id: str, content_id: str) -> str:
        """The ACL of a session: the template with its values filled in."""
        return self._acl.replace("{contentID}", encode(content_id)).replace(
            "{sessionId}", encode(session_id)
        )

    def token(self, session_id: str, content_id: str, at_ms: int, deadline_ms: int) -> str:
        """The token of *session_id*, issued at *at_ms* (the store's time), valid until its
        deadline plus the slack."""
        fields = (
            f"st={at_ms // 1000}~exp={expiry(deadline_ms, self._slack)}"
            f"~acl={self.acl(session_id, content_id)}~id={session_id}"
        )
        mac = hmac.new(self._key, fields.encode(), self._digest).hexdigest()
        return f"{fields}~hmac={mac}"
