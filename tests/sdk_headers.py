"""The request headers each official SDK sends, as a browser's preflight lists them in
``Access-Control-Request-Headers``: lower-cased, sorted, without the CORS-safelisted ones
(``accept: application/json``). Shared by the unit, integration and browser CORS tests.

Sources (read, not copied): openai-node ``src/core.ts`` ``defaultHeaders`` before v5 (it sent
``User-Agent`` from every runtime) and ``src/client.ts`` ``buildHeaders`` from v5 (no
``User-Agent`` in a browser, ``X-Stainless-Timeout``, ``X-Stainless-Helper-Method``); both
versions' ``src/internal/detect-platform.ts`` ``getPlatformHeaders``; openai-python
``src/openai/_base_client.py`` (``default_headers``, ``platform_headers``, the retry-count and
read-timeout headers) and ``src/openai/_client.py`` (``X-Stainless-Async``, ``OpenAI-*``);
anthropic-sdk-typescript ``src/client.ts`` ``buildHeaders`` (``anthropic-version``,
``anthropic-dangerous-direct-browser-access``, ``X-Api-Key``).
"""

from __future__ import annotations

# x-stainless-* names every Stainless-generated JS SDK sends (getPlatformHeaders)
_STAINLESS_JS = ("x-stainless-arch", "x-stainless-lang", "x-stainless-os",
                 "x-stainless-package-version", "x-stainless-retry-count",
                 "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-timeout")

SDK_PREFLIGHT_HEADERS: dict[str, tuple[str, ...]] = {
    # v4 in Firefox/Safari: User-Agent is asked for (Chromium drops it from fetch)
    "openai-node-4": ("authorization", "content-type", "openai-organization", "openai-project",
                      "user-agent", *_STAINLESS_JS),
    "openai-node-5": ("authorization", "content-type", "openai-organization", "openai-project",
                      "x-stainless-helper-method", *_STAINLESS_JS),
    # in a browser only through Pyodide, but its set is the widest of the three
    "openai-python": ("authorization", "content-type", "openai-organization", "openai-project",
                      "user-agent", "x-stainless-arch", "x-stainless-async", "x-stainless-lang",
                      "x-stainless-os", "x-stainless-package-version", "x-stainless-raw-response",
                      "x-stainless-read-timeout", "x-stainless-retry-count",
                      "x-stainless-runtime", "x-stainless-runtime-version"),
    "anthropic-sdk-typescript": ("anthropic-beta", "anthropic-dangerous-direct-browser-access",
                                 "anthropic-version", "content-type", "user-agent", "x-api-key",
                                 *_STAINLESS_JS),
}


def request_headers_value(names: tuple[str, ...]) -> str:
    """``names`` as a browser writes Access-Control-Request-Headers: sorted, comma-joined."""
    return ",".join(sorted(names))
