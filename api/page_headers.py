"""The web page's security headers (issue 19), and which paths are the page's.

Every answer on the page's paths carries them — the page, its files, its JSON views, and the
errors of all of these, including a 404 for a ``/web/...`` path no route matches — so that no
answer under the page's origin paths can be framed, sniffed or leak a referrer.
"""

from __future__ import annotations

# No inline script or style, nothing from another origin, not framed (the CSP Level 3
# directives). img-src allows data: for the page's icon only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers older than CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The page's files and JSON views live under this path; the page itself is at "/".
WEB_ROOT = "/web"


def is_page_path(path: str) -> bool:
    """Whether ``path`` (the request's path, without its query) is one of the page's: ``/`` or
    anything under ``/web``. With ``--api-prefix /web`` the API's paths are among them too;
    the headers do no harm on a JSON answer."""
    return path == "/" or path == WEB_ROOT or path.startswith(WEB_ROOT + "/")
