"""Fetching Debian packages and indexes without installing anything.

`apt-get download` fetches a ``.deb`` of the version apt's lists name as candidate, and
``dpkg-deb --fsys-tarfile`` unpacks the members we need (message catalogs, the copyright file)
into a cache directory; nothing is installed and nothing runs as a maintainer script. The
cache keeps only the extracted members and the name of the ``.deb`` they came from, so a
rebuild of the corpus reuses them and records exactly which package versions it read.

Package description translations come from apt's own ``Translation-<lang>`` indexes, fetched
by ``apt-get update`` into a private lists directory so the system's apt state is untouched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "service-debian"
CATALOG_MEMBERS = (
    "*/es/LC_MESSAGES/*.mo",
    "*/es_ES/LC_MESSAGES/*.mo",
    "./usr/share/doc/*/copyright",
)
_DOWNLOAD_BATCH = 25
_LICENSE_LINE = re.compile(r"^License:\s*(\S.*)$", re.MULTILINE)


@dataclass(frozen=True)
class FetchedPackage:
    name: str
    version: str
    root: Path  # the extracted members, laid out as in the package

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.root.rglob(pattern))

    def licences(self) -> list[str]:
        """The DEP-5 ``License:`` short names of the package's copyright file, in order."""
        names: list[str] = []
        for path in self.files("copyright"):
            text = path.read_text(encoding="utf-8", errors="replace")
            for name in _LICENSE_LINE.findall(text):
                name = name.strip()
                if name not in names:
                    names.append(name)
        return names


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found: this needs Debian's apt and dpkg")
    return path


def _cached(name: str, cache: Path) -> FetchedPackage | None:
    marker = cache / name / ".deb"
    if not marker.is_file():
        return None
    deb = marker.read_text(encoding="utf-8").strip()
    # pool file names are <name>_<version>_<arch>.deb, with ':' (epochs) written as %3a
    version = deb.split("_")[1].replace("%3a", ":") if deb.count("_") >= 2 else "unknown"
    return FetchedPackage(name, version, cache / name)


def fetch_packages(
    names: Sequence[str],
    cache: Path = DEFAULT_CACHE,
    members: Sequence[str] = CATALOG_MEMBERS,
    on_progress: Callable[[int], None] = lambda done: None,
) -> tuple[list[FetchedPackage], list[str]]:
    """Download and unpack ``members`` of each package not yet in ``cache``.

    Returns the packages fetched (cached ones included), in the order given, and the names
    apt could not download (no longer in the archive, or not for this architecture).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    apt_get, dpkg_deb = _require("apt-get"), _require("dpkg-deb")
    missing = [name for name in names if _cached(name, cache) is None]
    on_progress(len(names) - len(missing))
    for start in range(0, len(missing), _DOWNLOAD_BATCH):
        batch = missing[start : start + _DOWNLOAD_BATCH]
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            # One call per batch: apt pipelines the downloads; a name it cannot find makes the
            # whole call fail, so retry such a batch one package at a time.
            if subprocess.run(
                [apt_get, "download", "-q", *batch], cwd=tmp, capture_output=True
            ).returncode:
                for name in batch:
                    subprocess.run([apt_get, "download", "-q", name], cwd=tmp, capture_output=True)
            for deb in sorted(Path(tmp).glob("*.deb")):
                _unpack(dpkg_deb, deb, cache, members)
        on_progress(len(names) - len(missing) + len(batch) + start)
    fetched = [pkg for name in names if (pkg := _cached(name, cache)) is not None]
    failed = [name for name in names if _cached(name, cache) is None]
    return fetched, failed


def _unpack(dpkg_deb: str, deb: Path, cache: Path, members: Sequence[str]) -> None:
    name = subprocess.run(
        [dpkg_deb, "-f", str(deb), "Package"], capture_output=True, text=True, check=True
    ).stdout.strip()
    root = cache / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tar_stream = subprocess.Popen([dpkg_deb, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    # tar exits 2 when a pattern matches nothing (a package without a copyright file of its
    # own); what did match is extracted all the same.
    subprocess.run(
        ["tar", "-x", "-C", str(root), "--wildcards", "--no-anchored", *members],
        stdin=tar_stream.stdout,
        capture_output=True,
    )
    tar_stream.wait()
    (root / ".deb").write_text(deb.name + "\n", encoding="utf-8")


def source_packages(names: Iterable[str]) -> dict[str, str]:
    """Binary package -> source package, from apt's lists (a package is its own source when
    the index names none). Held-out splits hold out whole source packages, so that
    ``foo`` and ``foo-data`` never land on both sides."""
    names = list(names)
    result = subprocess.run(
        [_require("apt-cache"), "show", "--no-all-versions", *names],
        capture_output=True,
        text=True,
    )
    sources: dict[str, str] = {}
    package = None
    for line in result.stdout.splitlines():
        if line.startswith("Package: "):
            package = line.split(":", 1)[1].strip()
            sources.setdefault(package, package)
        elif line.startswith("Source: ") and package:
            sources[package] = line.split(":", 1)[1].split()[0]
    return {name: sources.get(name, name) for name in names}


def fetch_translation_indexes(
    langs: Sequence[str], cache: Path = DEFAULT_CACHE
) -> dict[str, list[Path]]:
    """The decompressed ``Translation-<lang>`` indexes of the configured archives, per lang.

    ``apt-get update`` runs against a private lists directory, so the system's lists are not
    touched; apt verifies the indexes against the signed Release files as usual.
    """
    lists = Path(cache) / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _require("apt-get"),
            "update",
            "-q",
            "-o",
            f"Dir::State::Lists={lists}",
            "-o",
            "Acquire::Languages=" + ",".join(langs),
            "-o",
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
        ],
        capture_output=True,
        check=True,
    )
    helper = "/usr/lib/apt/apt-helper"
    found: dict[str, list[Path]] = {}
    for lang in langs:
        found[lang] = []
        for index in sorted(lists.glob(f"*_i18n_Translation-{lang}.*")):
            plain = Path(cache) / "translations" / index.name.rsplit(".", 1)[0]
            plain.parent.mkdir(parents=True, exist_ok=True)
            with plain.open("wb") as handle:
                subprocess.run([helper, "cat-file", str(index)], stdout=handle, check=True)
            found[lang].append(plain)
    return found
