"""A stand-in for the Hugging Face Hub: the few endpoints huggingface_hub's `create_repo` and
`upload_folder` call, in a thread of the test process. Each repo is a folder of the files its
commits left, so a test reads what arrived (e.g. with `datasets.load_dataset`).

    POST /api/repos/create                            a repo (exists: fine)
    POST /api/validate-yaml                           the README's YAML header parses to a mapping
                                                      whose `configs` name their data files
    POST /api/datasets/<ns>/<name>/preupload/<rev>    every file "regular" (sent inline, no LFS)
    GET  /api/datasets/<ns>/<name>/tree/<rev>         the repo's files (for delete_patterns)
    POST /api/datasets/<ns>/<name>/commit/<rev>       applies the NDJSON commit: adds, deletes

With `refuse=403` every request is answered 403, as the Hub answers a token without write access.
Point huggingface_hub at it with HF_ENDPOINT (read when huggingface_hub is imported), or by setting
`huggingface_hub.constants.ENDPOINT` in a process that imported it already.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROUTE = re.compile(r"/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<verb>preupload|tree|commit)/(?P<rev>[^/?]+)")


class StandinHub:
    def __init__(self, root: Path, refuse: int | None = None) -> None:
        self.root, self.refuse = root, refuse
        self.commits: list[str] = []  # commit summaries, in order
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                m = ROUTE.match(self.path)
                if hub.refuse or not m or m["verb"] != "tree":
                    return self.reply(hub.refuse or 404, {"error": "refused" if hub.refuse else "not found"})
                repo = hub.repo(m["repo"])
                files = sorted(p for p in repo.rglob("*") if p.is_file()) if repo.is_dir() else []
                self.reply(200, [{"type": "file", "path": p.relative_to(repo).as_posix(), "size": p.stat().st_size, "oid": "0" * 40} for p in files])

            def do_POST(self) -> None:
                body = self.body()
                if hub.refuse:
                    return self.reply(hub.refuse, {"error": "You don't have the rights to create a dataset under this namespace"})
                if self.path.startswith("/api/repos/create"):
                    req = json.loads(body)
                    repo_id = f"{req.get('organization') or 'me'}/{req['name']}"
                    hub.repo(repo_id).mkdir(parents=True, exist_ok=True)
                    return self.reply(200, {"url": f"http://{self.headers['Host']}/datasets/{repo_id}", "name": repo_id})
                if self.path.startswith("/api/validate-yaml"):
                    error = hub.invalid_yaml(json.loads(body)["content"])
                    return self.reply(400 if error else 200, {"errors": [{"message": error}] if error else [], "warnings": []})
                m = ROUTE.match(self.path)
                if not m:
                    return self.reply(404, {"error": "not found"})
                if m["verb"] == "preupload":
                    files = json.loads(body)["files"]
                    return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
                repo = hub.repo(m["repo"])
                for line in body.splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        hub.commits.append(value["summary"])
                    elif item["key"] == "file":
                        path = hub.inside(repo, value["path"])
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(base64.b64decode(value["content"]))
                    elif item["key"] == "deletedFile":
                        hub.inside(repo, value["path"]).unlink(missing_ok=True)
                    elif item["key"] == "deletedFolder":
                        shutil.rmtree(hub.inside(repo, value["path"]), ignore_errors=True)
                    else:
                        return self.reply(400, {"error": f"unsupported commit item {item['key']}"})
                oid = hashlib.sha1(body).hexdigest()
                self.reply(200, {"commitUrl": f"http://{self.headers['Host']}/datasets/{m['repo']}/commit/{oid}", "commitOid": oid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def invalid_yaml(readme: str) -> str | None:
        """What the Hub would refuse in a README's header (the part this stand-in can check)."""
        if not readme.startswith("---\n") or "\n---\n" not in readme[3:]:
            return "no YAML header"
        try:
            meta = yaml.safe_load(readme[4 : readme.index("\n---\n", 3)])
        except yaml.YAMLError as exc:
            return f"invalid YAML: {exc}"
        if not isinstance(meta, dict):
            return "the header is not a mapping"
        for config in meta.get("configs", []):
            if not isinstance(config, dict) or not isinstance(config.get("config_name"), str) or not config.get("data_files"):
                return f"a config needs config_name and data_files: {config!r}"
        return None

    def repo(self, repo_id: str) -> Path:
        return self.inside(self.root, repo_id)

    @staticmethod
    def inside(folder: Path, relative: str) -> Path:
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ValueError(f"{relative} is outside {folder}")
        return path


@contextmanager
def standin_hub(root: Path, refuse: int | None = None) -> Iterator[StandinHub]:
    hub = StandinHub(root, refuse)
    thread = threading.Thread(target=hub.server.serve_forever, name="standin-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.server.shutdown()
        hub.server.server_close()
        thread.join()
