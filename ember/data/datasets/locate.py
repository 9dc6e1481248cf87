"""Find a dataset's files: the explicit root, $EMBER_DATA_DIR, ~/.cache/ember, then a download.

Every file found or downloaded is checked against a pinned sha256 before use. A mismatch is
a ``ChecksumError`` naming the file (never a silent fall-through to the next place); when
nothing is found and the download fails, one ``DatasetNotFoundError`` names all four places.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
from dataclasses import dataclass, field

__all__ = [
    "Resource",
    "DatasetNotFoundError",
    "ChecksumError",
    "locate",
    "cache_dir",
    "sha256_file",
]

ENV_VAR = "EMBER_DATA_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """The data is in none of the places looked at, and could not be downloaded."""


class ChecksumError(RuntimeError):
    """A data file does not match its pinned sha256 (corrupted, truncated or wrong file)."""


@dataclass(frozen=True)
class Resource:
    """One file of a dataset.

    ``sha256``: accepted digests of the file as distributed (mirrors sometimes recompress).
    ``content_sha256``: digest of the decompressed bytes of a ``.gz`` file; it also accepts a
    gzip made by another tool and the decompressed file itself (listed in ``alt_names``).
    ``alt_names`` may name a directory (an extracted archive); the dataset checks its members.
    """

    name: str
    urls: tuple = ()
    sha256: tuple = ()
    content_sha256: str | None = None
    alt_names: tuple = field(default_factory=tuple)


def cache_dir() -> pathlib.Path:
    return pathlib.Path.home() / ".cache" / "ember"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: pathlib.Path, res: Resource, dataset: str, name: str | None = None) -> None:
    """Raise ChecksumError unless ``path`` (a file called ``name``) matches ``res``'s pins."""
    name = name or path.name
    if path.is_dir():
        return  # an extracted archive: the dataset checks its member files
    digest = sha256_file(path)
    if digest in res.sha256:
        return
    if res.content_sha256:
        if digest == res.content_sha256:
            return  # the decompressed file itself
        if name.endswith(".gz"):
            try:
                if _content_sha256(path) == res.content_sha256:
                    return  # another gzip of the same bytes
            except (OSError, EOFError):
                pass
        expected = " or ".join((*res.sha256, f"{res.content_sha256} (decompressed)"))
    elif name != res.name or not res.sha256:
        return  # a decompressed copy, nothing pinned for it: the reader validates its layout
    else:
        expected = " or ".join(res.sha256)
    raise ChecksumError(
        f"{dataset}: checksum mismatch for {path}: its sha256 is {digest}, expected "
        f"{expected}. The file is corrupted, truncated or not the right file: delete it "
        f"(it will then be found elsewhere or downloaded again)."
    )


def _places(subdir: str, root) -> list:
    """(label, [directories]) in search order; a None directory means "not configured"."""
    root_dirs = None
    if root is not None:
        r = pathlib.Path(root).expanduser()
        root_dirs = [r, r / subdir]
    env = os.environ.get(ENV_VAR)
    env_dirs = [pathlib.Path(env).expanduser() / subdir] if env else None
    return [
        ("the explicit root", root_dirs),
        (f"${ENV_VAR}", env_dirs),
        ("the user cache", [cache_dir() / subdir]),
    ]


def _download(url: str, dest: pathlib.Path, timeout: float = 60.0) -> None:
    """Fetch ``url`` into ``dest`` (urllib, imported here so importing ember stays light)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)


def _try_download(res: Resource, target: pathlib.Path, dataset: str) -> tuple:
    """(path or None, why it failed): each mirror in turn, verified before it is kept."""
    if not res.urls:
        return None, "no download URL is known for this file"
    errors = []
    for url in res.urls:
        tmp = target / f".{res.name}.part"
        try:
            target.mkdir(parents=True, exist_ok=True)
            _download(url, tmp)
            verify(tmp, res, dataset, name=res.name)
            final = target / res.name
            os.replace(tmp, final)
            return final, ""
        except Exception as exc:  # offline, HTTP errors, bad checksum, unwritable directory
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    return None, "; ".join(errors)


def locate(dataset: str, subdir: str, resources, root=None, download: bool = True) -> list:
    """Paths of ``resources`` (in order); see the module docstring for the search order."""
    return [_locate_one(dataset, subdir, res, root, download) for res in resources]


def _locate_one(dataset: str, subdir: str, res: Resource, root, download: bool):
    places = _places(subdir, root)
    names = (res.name, *res.alt_names)
    for _label, dirs in places:
        for d in dirs or ():
            for name in names:
                p = d / name
                if p.exists():
                    verify(p, res, dataset)
                    return p
    target = (
        (pathlib.Path(root).expanduser() / subdir) if root is not None else (cache_dir() / subdir)
    )
    if download:
        found, why = _try_download(res, target, dataset)
        if found is not None:
            return found
        step = f"a download from {', '.join(res.urls) or '(none)'} into {target}: failed ({why})"
    else:
        step = f"a download from {', '.join(res.urls) or '(none)'}: not tried (download=False)"
    lines = []
    for i, (label, dirs) in enumerate(places, 1):
        where = (
            " and ".join(str(d) for d in dirs)
            if dirs
            else ("not given" if label.startswith("the explicit") else "not set")
        )
        lines.append(f"  {i}. {label}: {where}")
    lines.append(f"  4. {step}")
    alts = f" (or {', '.join(repr(a) for a in res.alt_names)})" if res.alt_names else ""
    raise DatasetNotFoundError(
        f"{dataset}: could not find {res.name!r}{alts}. Looked in, in order:\n"
        + "\n".join(lines)
        + f"\nPass root=, set ${ENV_VAR}, or put the file in {cache_dir() / subdir}."
    )
