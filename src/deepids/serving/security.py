"""Who may talk to `deepids serve`, and what it shows them.

- `BearerTokenGuard`: an ASGI middleware that answers 401 (counted in
  ``deepids_requests_unauthorized_total``) to every request but ``/healthz`` whose
  ``Authorization`` header is not ``Bearer <token>``; the token is compared in constant time
  (`hmac.compare_digest`) and the body of a refused request is never read.
- `check_bind`: a non-loopback address without a token refuses to start unless the operator
  says ``--insecure``.
- `docs_html`: the API documentation rendered on the server from the OpenAPI document, with
  no script, font or style fetched from the internet.
- `without_paths`: the model's metadata as served, with file paths reduced to file names.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import os
import re
from pathlib import Path, PureWindowsPath
from typing import Any

import orjson

from deepids.errors import ConfigError

TOKEN_ENV = "DEEPIDS_TOKEN"
OPEN_PATHS = frozenset({"/healthz"})


def resolve_token(token: str | None) -> str | None:
    """The service token: the option's value, else ``$DEEPIDS_TOKEN``, else None. Blank is an error."""
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise ConfigError(f"the token is empty; give a secret to --token or {TOKEN_ENV}")
    if len(token) < 16:
        raise ConfigError("the token is shorter than 16 characters; use a long random secret "
                          "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False          # a host name: it may resolve to anything


def check_bind(host: str, token: str | None, insecure: bool) -> str | None:
    """Refuse a non-loopback address without a token unless `insecure`; returns a warning or None."""
    if is_loopback(host) or token is not None:
        return None
    if not insecure:
        raise ConfigError(f"refusing to serve on {host} without a token: anyone who can reach it could score "
                          f"and read the model. Give --token (or {TOKEN_ENV}), bind to 127.0.0.1, or pass "
                          f"--insecure if a proxy in front of it authenticates")
    return f"serving on {host} WITHOUT authentication (--insecure): anyone who can reach it can use it"


class BearerTokenGuard:
    """ASGI middleware: every HTTP request but those to `open_paths` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str, on_refused=None, open_paths=OPEN_PATHS):
        self.app = app
        self._token = token.encode()
        self._on_refused = on_refused
        self._open = open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self._open:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)
        if ok:
            return await self.app(scope, receive, send)
        if self._on_refused is not None:
            self._on_refused()
        detail = "a bearer token is required" if not given else "the token is not valid"
        body = orjson.dumps({"detail": detail})
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="deepids"'), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- documentation

def docs_html(spec: dict) -> str:
    """A self-contained HTML page describing the API (no external assets, no script)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(spec['info']['title'])} API</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto}"
             "h2{border-top:1px solid #ccc;padding-top:.6em}</style></head><body>",
             f"<h1>{e(spec['info']['title'])} {e(str(spec['info'].get('version', '')))}</h1>",
             f"<p>{e(spec['info'].get('description', ''))}</p>",
             "<p>The machine-readable description is at <code>/openapi.json</code>.</p>"]
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            parts.append(f"<h2><code>{e(method.upper())} {e(path)}</code></h2>")
            parts.append(f"<p>{e(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<pre>{e(op['description'])}</pre>")
            body = op.get("requestBody", {}).get("content")
            if body:
                parts.append("<p>Request body: " + ", ".join(f"<code>{e(k)}</code>" for k in body) + "</p>")
            codes = op.get("responses", {})
            if codes:
                parts.append("<p>Answers: " + ", ".join(f"<code>{e(str(c))}</code> {e(r.get('description', ''))}"
                                                        for c, r in codes.items()) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- metadata

_PATHLIKE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\|\.\.?[\\/])")


def without_paths(obj: Any) -> Any:
    """The same structure with every string that looks like a file path reduced to its file name."""
    if isinstance(obj, dict):
        return {k: without_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_paths(v) for v in obj]
    if isinstance(obj, str) and _PATHLIKE.match(obj):
        name = PureWindowsPath(obj).name if "\\" in obj else Path(obj).name
        return name or obj
    return obj
