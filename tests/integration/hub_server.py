"""A local stand-in for the Hugging Face hub, for ``hearth models pull`` tests (127.0.0.1 only).

It answers as the hub does (checked against huggingface_hub's client and the hub's responses):

* ``GET /api/models/{owner}/{repo}/tree/main?recursive=true`` -> ``[{"type": "file", "path",
  "size", "oid", "lfs": {"oid": <sha256>, "size"}}]``;
* ``GET /{owner}/{repo}/resolve/main/{path}`` -> ``302`` to the file on a "CDN" host, with
  ``X-Linked-ETag: "<sha256>"``, ``X-Linked-Size`` and ``ETag``;
* a gated repo answers ``401`` without ``Authorization: Bearer <token>``; an unknown repo
  ``401`` with ``X-Error-Code: RepoNotFound``, an unknown file ``404``;
* the CDN (``/cdn/...``) serves bytes with ``Content-Length``, an opaque ``ETag`` and
  ``Last-Modified``, and ``Range`` -> ``206`` (``416`` past the end) unless an ``If-Range``
  names another ETag (then ``200`` with the whole file, RFC 9110 13.1.5); it is reached as
  ``localhost`` while the hub is ``127.0.0.1``, so a token sent there would be a token sent
  to another host;
* ``/plain/{name}`` serves a file with no hash at all, as an ordinary web server (the same
  validators and ranges);
* ``/redirect/{name}`` answers ``302`` to ``redirects[name]``, wherever that points.

Every body it sends is logged (:attr:`HubServer.log`), so a test can tell which byte ranges
went over the wire and which requests carried a token.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Sent:
    """One body sent: ``path`` requested, ``start`` of its range, ``sent`` bytes, and whether
    the request carried an ``Authorization`` header."""

    path: str
    start: int
    sent: int
    auth: bool


@dataclass
class HubServer:
    token: str = "hf_test_token_5ecret"
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "o/r" -> {path: bytes}
    gated: set[str] = field(default_factory=set)
    published_sha: dict[str, str] = field(default_factory=dict)  # path -> a (wrong) sha to claim
    plain: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (body, type)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, then hang up once
    stall_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, then wait
    no_ranges: set[str] = field(default_factory=set)  # file names served whole, Range ignored
    no_validators: set[str] = field(default_factory=set)  # file names sent without ETag
    no_length: set[str] = field(default_factory=set)  # file names sent without Content-Length
    redirects: dict[str, str] = field(default_factory=dict)  # /redirect/{name} -> Location
    release: threading.Event = field(default_factory=threading.Event)
    log: list[Sent] = field(default_factory=list)
    requests: list[tuple[str, bool]] = field(default_factory=list)  # (path, had a token)

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub._get(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def cdn_sends(self, path: str) -> list[Sent]:
        return [s for s in self.log if s.path.endswith("/" + path)]

    # ---- request handling ----------------------------------------------------------------

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        auth = h.headers.get("Authorization")
        self.requests.append((path, auth is not None))
        authed = auth == f"Bearer {self.token}"
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and parts[4:6] == ["tree", "main"]:
            repo = "/".join(parts[2:4])
            if not self._repo_ok(h, repo, authed):
                return
            listing = [{"type": "file", "path": p, "size": len(b), "oid": "0" * 40,
                        "lfs": {"oid": self._sha(p, b), "size": len(b), "pointerSize": 134}}
                       for p, b in sorted(self.repos[repo].items())]
            listing.insert(0, {"type": "directory", "path": "sub", "oid": "1" * 40, "size": 0})
            self._send_json(h, listing)
        elif len(parts) > 4 and parts[2:4] == ["resolve", "main"]:
            repo, file = "/".join(parts[:2]), "/".join(parts[4:])
            if not self._repo_ok(h, repo, authed):
                return
            body = self.repos[repo].get(file)
            if body is None:
                self._send(h, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
                return
            sha = self._sha(file, body)
            cdn = f"http://localhost:{self.port}/cdn/{repo}/{urllib.parse.quote(file)}?sig=x"
            self._send(h, 302, b"", {"Location": cdn, "X-Linked-ETag": f'"{sha}"',
                                     "X-Linked-Size": str(len(body)), "ETag": '"abc123"'})
        elif parts[0] == "cdn":
            repo, file = "/".join(parts[1:3]), "/".join(parts[3:])
            self._serve_bytes(h, path, self.repos.get(repo, {}).get(file),
                              "application/octet-stream", auth is not None)
        elif parts[0] == "redirect" and len(parts) == 2 and parts[1] in self.redirects:
            self._send(h, 302, b"", {"Location": self.redirects[parts[1]]})
        elif parts[0] == "plain" and len(parts) == 2:
            body, ctype = self.plain.get(parts[1], (None, ""))
            self._serve_bytes(h, path, body, ctype, auth is not None)
        else:
            self._send(h, 404, b"no such route")

    def _sha(self, path: str, body: bytes) -> str:
        return self.published_sha.get(path) or hashlib.sha256(body).hexdigest()

    def _repo_ok(self, h: BaseHTTPRequestHandler, repo: str, authed: bool) -> bool:
        if repo not in self.repos:
            self._send(h, 401, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
            return False
        if repo in self.gated and not authed:
            self._send(h, 401, b"Access to this repo is restricted", {"X-Error-Code": "GatedRepo"})
            return False
        return True

    def _serve_bytes(self, h: BaseHTTPRequestHandler, path: str, body: bytes | None,
                     ctype: str, auth: bool) -> None:
        if body is None:
            self._send(h, 404, b"not found")
            return
        start, status = 0, 200
        name = path.rsplit("/", 1)[-1]
        headers = {"Content-Type": ctype, "Accept-Ranges": "bytes"}
        etag = f'"{hashlib.sha1(body).hexdigest()}"'  # opaque: not a sha256 (40 hex digits)
        if name not in self.no_validators:
            headers.update({"ETag": etag, "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"})
        rng = h.headers.get("Range", "")
        if_range = h.headers.get("If-Range")
        if (rng.startswith("bytes=") and rng.endswith("-") and name not in self.no_ranges
                and if_range in (None, etag)):
            start = int(rng[len("bytes="):-1])
            if start >= len(body):
                self._send(h, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        chunk = body[start:]
        limit = self.drop_after.pop(name, None)
        stall = self.stall_after.pop(name, None)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if name not in self.no_length:  # else the end of the body is the end of the connection
            h.send_header("Content-Length", str(len(chunk)))
        h.end_headers()
        cut = limit if limit is not None else stall
        sent = chunk if cut is None else chunk[:cut]
        try:
            h.wfile.write(sent)
            h.wfile.flush()
            if stall is not None:
                self.release.wait(60)
        except OSError:
            pass
        self.log.append(Sent(path, start, len(sent), auth))
        if cut is not None:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @classmethod
    def _send_json(cls, h: BaseHTTPRequestHandler, doc: object) -> None:
        cls._send(h, 200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
