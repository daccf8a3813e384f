"""The dashboard's files, served by the hub at ``/ui/`` on the HTTP port.

They ship inside the package (``wsbus/ui/``: no CDN, no build step) and are read
once, when the HTTP port starts: a request never touches the disk, and only the
files that were there can be asked for (no path is joined from a request). Every
answer carries a strict Content-Security-Policy: the page may load its own scripts
and styles and open a websocket to its own origin, nothing else.
"""

from __future__ import annotations

import importlib.resources
import mimetypes
import re
from importlib.resources.abc import Traversable

from aiohttp import web

__all__ = ["CSP", "StaticUi"]

#: the page's own scripts, styles and images, and a websocket to its own origin
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: the headers of every ``/ui`` answer
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class StaticUi:
    """The files of ``wsbus/ui`` in memory: name -> (bytes, content type)."""

    def __init__(self, root: Traversable | None = None) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        if root is None:
            root = importlib.resources.files("wsbus").joinpath("ui")
        if not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.is_file() and _NAME.match(entry.name):
                suffix = "." + entry.name.rpartition(".")[2]
                kind = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
                self.files[entry.name] = (entry.read_bytes(), kind or "application/octet-stream")

    def answer(self, path: str) -> web.Response:
        """``/ui`` -> ``/ui/``; ``/ui/`` -> index.html; ``/ui/NAME`` -> that file; 404."""
        if path == "/ui":
            raise web.HTTPPermanentRedirect("/ui/", headers=HEADERS)
        name = path[len("/ui/") :] or "index.html"
        found = self.files.get(name)
        if found is None:
            if not self.files:
                message = "the dashboard's files are not installed (wsbus/ui is missing)"
            else:
                message = f"not found: {path[:100]}"
            return web.json_response({"error": message}, status=404, headers=HEADERS)
        body, kind = found
        charset = "utf-8" if kind.startswith("text/") or kind.endswith("+xml") else None
        return web.Response(body=body, content_type=kind, charset=charset, headers=HEADERS)
