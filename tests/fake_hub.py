"""A local stand-in for the Hugging Face Hub's HTTP API, enough for `hf_hub_download` and
`HfApi.list_repo_tree`: the real huggingface_hub code runs against it through ``HF_ENDPOINT``.

Serves ``HEAD/GET /{repo}/resolve/{revision}/{path}`` and
``GET /api/models/{repo}/tree/{revision}/{path}``, with the Hub's error codes (``X-Error-Code``:
RepoNotFound, RevisionNotFound, EntryNotFound) so that huggingface_hub raises its own errors.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    """One model repository: a single commit holding `files` (path -> bytes), reachable by
    its hash or by the branch names in `branches`."""

    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    branches: tuple[str, ...] = ("main",)
    downloads: list[str] = field(default_factory=list)

    def resolve(self, revision: str) -> bool:
        return revision == self.commit or revision in self.branches


class FakeHub:
    """A threaded HTTP server on localhost serving `repos` (repo id -> `FakeRepo`).

    Use as a context manager; `endpoint` is the value for ``HF_ENDPOINT``.
    """

    def __init__(self, repos: dict[str, FakeRepo]) -> None:
        self.repos = repos
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path).strip("/")
        parts = path.split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "tree":
            repo_id, revision, inner = "/".join(parts[2:4]), parts[5], "/".join(parts[6:])
            self._tree(request, repo_id, revision, inner)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, inner = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            self._file(request, repo_id, revision, inner, body)
        else:
            self._error(request, 404, "RepoNotFound")

    def _repo(self, request, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 404, "RepoNotFound")
        elif not repo.resolve(revision):
            self._error(request, 404, "RevisionNotFound")
        else:
            return repo
        return None

    def _file(self, request, repo_id: str, revision: str, inner: str, body: bool) -> None:
        repo = self._repo(request, repo_id, revision)
        if repo is None:
            return
        if inner not in repo.files:
            self._error(request, 404, "EntryNotFound")
            return
        data = repo.files[inner]
        request.send_response(200)
        request.send_header("X-Repo-Commit", repo.commit)
        request.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            repo.downloads.append(inner)
            request.wfile.write(data)

    def _tree(self, request, repo_id: str, revision: str, inner: str) -> None:
        repo = self._repo(request, repo_id, revision)
        if repo is None:
            return
        prefix = f"{inner}/" if inner else ""
        below = [p for p in repo.files if p.startswith(prefix)]
        if not below:
            self._error(request, 404, "EntryNotFound")
            return
        folders = sorted(
            {"/".join(p.split("/")[:i]) for p in below for i in range(1, p.count("/") + 1)}
        )
        entries = [
            {"type": "directory", "path": f, "oid": "0" * 40}
            for f in folders
            if f.startswith(prefix)
        ]
        entries += [
            {"type": "file", "path": p, "size": len(repo.files[p]), "oid": "1" * 40} for p in below
        ]
        payload = json.dumps(entries).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    @staticmethod
    def _error(request, status: int, code: str) -> None:
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("Content-Length", "0")
        request.end_headers()
