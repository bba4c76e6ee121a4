"""LibreTranslate's file translation: `POST /translate_file` and `GET /download_file/{name}`.

A multipart form with `file` (`.txt`, `.html` or `.htm`, UTF-8), `source` (a language or
`auto`), `target` and, when keys are required, `api_key` (`service.api.access` reads it from
the form). The file's text is translated as `/translate` translates one `q` (an HTML file with
`format: html`'s rules: markup kept) and the answer is `{"translatedFileUrl": ...}`, a URL
under `/download_file/` that serves the translation as an attachment with the uploaded name.

Limits: `max_file_bytes` for the file (413), and `max_request_chars` for its text (413: a text
file's characters, an HTML file's translatable characters); a body over `max_body_bytes` is
refused before this route runs. Errors are LibreTranslate's `{"error": "..."}`.

Translated files wait in a directory (`file_store_dir`, by default in the system's temp
directory), not in memory, so that every ingress replica of a node can serve a download that
another one stored; each expires `file_ttl_s` after it was written and at most
`file_store_max` are kept (the oldest go first), swept whenever one is stored. With ingress
replicas on several nodes, a download can reach a node that lacks the file (404): point
`file_store_dir` at a shared directory there. The download URL's id is 128 random bits, so
the download route needs no key, as in LibreTranslate.
"""

# No `from __future__ import annotations`: FastAPI must see the response model.

import copy
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.api.backends import Backends
from service.api.detect import AUTO
from service.api.errors import ApiError
from service.api.experiments import ABTesting
from service.api.libretranslate import (
    FILE_FORMATS,
    as_lt_error,
    lt_error,
    lt_errors,
    translate_texts,
)
from service.api.settings import ApiSettings
from service.contracts import ServiceError
from service.text.html import HtmlError, HtmlPage

STORED_NAME = re.compile(r"^[0-9a-f]{32}\.[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TranslatedFile(BaseModel):
    translatedFileUrl: str


def safe_filename(name: str, extension: str) -> str:
    """The uploaded name reduced to a plain file name (no directories, ASCII letters, digits,
    `.`, `_`, `-`), ending in `extension`."""
    base = PurePosixPath(name.replace("\\", "/")).name
    stem = base[: -len(extension)] if base.lower().endswith(extension) else base
    stem = _UNSAFE.sub("_", stem).strip("._-")[:100] or "file"
    return stem + extension


class FileStore:
    """Translated files in `root`, each `<32 hex digits>.<name>`, kept `ttl_s` seconds and at
    most `max_files` of them."""

    def __init__(
        self, root: Path, ttl_s: float, max_files: int, clock: Callable[[], float] = time.time
    ):
        self.root = root
        self.ttl_s = ttl_s
        self.max_files = max_files
        self.clock = clock

    def put(self, name: str, content: bytes) -> str:
        """Store `content`; the name to download it by."""
        self.root.mkdir(parents=True, exist_ok=True)
        stored = f"{secrets.token_hex(16)}.{name}"
        partial = self.root / f".{stored}.part"
        partial.write_bytes(content)
        now = self.clock()
        os.utime(partial, (now, now))
        os.replace(partial, self.root / stored)
        self.sweep()
        return stored

    def get(self, stored: str) -> bytes | None:
        """The file's bytes, or None when the name is unknown, malformed or expired."""
        if not STORED_NAME.match(stored):
            return None
        path = self.root / stored
        try:
            if path.stat().st_mtime + self.ttl_s <= self.clock():
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:  # never stored, or swept (here or by another replica)
            return None

    def sweep(self) -> None:
        """Drop expired files, then the oldest beyond `max_files`."""
        now = self.clock()
        kept = []
        for path in self.root.iterdir():
            if not STORED_NAME.match(path.name):
                continue
            try:
                modified = path.stat().st_mtime
                if modified + self.ttl_s <= now:
                    path.unlink(missing_ok=True)
                else:
                    kept.append((modified, path))
            except FileNotFoundError:
                continue
        kept.sort()
        for _, path in kept[: max(0, len(kept) - self.max_files)]:
            path.unlink(missing_ok=True)


def default_store(settings: ApiSettings) -> FileStore:
    root = settings.file_store_dir or os.path.join(
        tempfile.gettempdir(), "service-translated-files"
    )
    return FileStore(Path(root), settings.file_ttl_s, settings.file_store_max)


_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "source", "target"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A UTF-8 `.txt`, `.html` or `.htm` file.",
                        },
                        "source": {"type": "string", "description": "Language code or `auto`."},
                        "target": {"type": "string", "description": "Language code."},
                        "api_key": {"type": "string", "description": "When keys are required."},
                    },
                }
            }
        },
    }
}


class BadFile(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def files_router(
    settings: ApiSettings, backends: Backends, ab: ABTesting, store: FileStore | None = None
) -> APIRouter:
    store = store or default_store(settings)
    router = APIRouter(tags=["libretranslate"])
    form_schema = copy.deepcopy(_FORM_SCHEMA)
    fields = form_schema["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    fields["source"]["enum"] = [AUTO, *sorted({m.source for m in backends.catalog.models})]
    fields["target"]["enum"] = sorted({m.target for m in backends.catalog.models})
    char_limit = min(settings.max_text_chars, settings.max_request_chars)

    async def upload(request: Request) -> tuple[str, str, str, str]:
        """(file name, its text, source, target) of a valid upload, or BadFile."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(
            ("multipart/form-data", "application/x-www-form-urlencoded")
        ):
            raise BadFile(400, "Invalid request: send the file as multipart/form-data")
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException as error:
            raise BadFile(400, f"Invalid request: {error.detail}") from None
        fields = {**request.query_params, **{k: v for k, v in form.items() if isinstance(v, str)}}
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadFile(400, "Invalid request: missing file parameter")
        for name in ("source", "target"):
            if not fields.get(name):
                raise BadFile(400, f"Invalid request: missing {name} parameter")
        filename = upload.filename or ""
        if not filename:
            raise BadFile(400, "Invalid request: empty file")
        extension = os.path.splitext(filename)[1].lower()
        if extension not in FILE_FORMATS:
            raise BadFile(
                400,
                f"Invalid request: file format not supported ({extension or 'no extension'}); "
                f"supported: {', '.join(FILE_FORMATS)}",
            )
        content = await upload.read(settings.max_file_bytes + 1)
        if len(content) > settings.max_file_bytes:
            raise BadFile(413, f"file is larger than the limit of {settings.max_file_bytes} bytes")
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise BadFile(
                400, f"Invalid request: the file is not UTF-8 text (byte {error.start})"
            ) from None
        if not text.strip():
            raise BadFile(400, "Invalid request: empty file")
        return filename, text, fields["source"], fields["target"]

    def check_size(text: str, html: bool) -> None:
        if html:
            try:
                characters = sum(len(run) for run in HtmlPage(text).texts)
            except HtmlError as error:
                raise BadFile(400, f"Invalid request: {error}") from None
            what = "translatable characters"
        else:
            characters, what = len(text), "characters"
        if characters > char_limit:
            raise BadFile(413, f"the file has {characters} {what}; at most {char_limit}")

    @router.post(
        "/translate_file",
        response_model=TranslatedFile,
        responses=lt_errors(400, 403, 404, 413, 429, 500, 503, 504),
        summary="LibreTranslate-compatible file translation (.txt, .html)",
        openapi_extra=form_schema,
    )
    async def translate_file(request: Request, response: Response) -> Any:
        try:
            filename, text, source, target = await upload(request)
            extension = os.path.splitext(filename)[1].lower()
            html = FILE_FORMATS[extension] == "text/html"
            check_size(text, html)
            outcomes, _ = await translate_texts(
                settings,
                backends,
                ab,
                request,
                response,
                [text],
                source,
                target,
                html=html,
                n_best=1,
                single=True,
                field="file",
            )
        except BadFile as error:
            return lt_error(error.status, error.message)
        except (ApiError, ServiceError, ValidationError) as error:
            return as_lt_error(error)
        stored = store.put(safe_filename(filename, extension), outcomes[0].text(0).encode())
        url = str(request.url_for("download_file", filename=stored))
        return TranslatedFile(translatedFileUrl=url)

    @router.get(
        "/download_file/{filename:path}",
        name="download_file",
        summary="A file /translate_file translated",
        responses={
            200: {"content": {"text/plain": {}, "text/html": {}}, "description": "The file."},
            **lt_errors(404),
        },
        response_class=Response,
    )
    async def download_file(filename: str) -> Response:
        content = store.get(filename)
        if content is None:
            return lt_error(
                404,
                f"no such file: {filename!r} is unknown or expired (files are kept "
                f"{settings.file_ttl_s:g} s)",
            )
        name = filename.split(".", 1)[1]
        media_type = FILE_FORMATS[os.path.splitext(name)[1].lower()]
        return Response(
            content,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
