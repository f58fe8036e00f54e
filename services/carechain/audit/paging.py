"""Pages of the audit service's listings: page sizes and opaque page tokens bound to their query.

A listing (a patient's accounting, FHIR export, notifications, the review queue)
returns at most :func:`page_size` entries and a ``next_page_token`` naming where
the next page starts (the last entry's position). The token also carries a
digest of the query it belongs to (the RPC, the patient, the period or status as
requested), and :func:`position` refuses it for any other query: a token from
one patient's history cannot page through another patient's, and the caller's
right to the query named in the request is checked on every page. Positions
are only sequence numbers and times of entries the caller already received.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from carechain.core.crypto import same
from carechain.core.errors import InvalidArgument

#: Entries per page when a request asks for none (page_size 0).
DEFAULT_PAGE_SIZE = 100
#: The most entries per page; a larger page_size is treated as this.
MAX_PAGE_SIZE = 1000
_VERSION = 1


def page_size(requested: int) -> int:
    """The page size to serve for a request's page_size (0 = the default, at most :data:`MAX_PAGE_SIZE`)."""
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _digest(query: tuple[object, ...]) -> str:
    return hashlib.sha256("\x00".join(str(part) for part in query).encode()).hexdigest()[:32]


def next_token(query: tuple[object, ...], **position: int) -> str:
    """The page token continuing query after position (e.g. the last entry's time and sequence)."""
    body = json.dumps({"v": _VERSION, "q": _digest(query), "p": position}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def position(token: str, query: tuple[object, ...]) -> dict[str, int] | None:
    """The position a page token continues from (None for an empty token: the first page).

    INVALID_ARGUMENT naming page_token when it is malformed or was issued for another query.
    """
    if not token:
        return None
    try:
        body: Any = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if body.get("v") != _VERSION:
            raise ValueError("version")
        digest = str(body["q"])
        found = {str(k): int(v) for k, v in dict(body["p"]).items()}
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        raise InvalidArgument("page_token", "not a page token of this service") from exc
    if not same(digest.encode(), _digest(query).encode()):
        raise InvalidArgument("page_token", "belongs to another query (send the same patient, period or status "
                                            "as for the first page)")
    return found
