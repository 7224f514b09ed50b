"""Where the dataset goes: a local directory or an object store (``s3://bucket/prefix``).

A run's journal, staging and summaries always live in a local work directory: the target
itself when it is local, else ``--work-dir`` (by default a folder under ``~/.cache/extractor``
named after the target). An object store shows an object only once it is whole (a PUT, or
a multipart upload once completed), so a file is uploaded straight to its final key; Delta
tables (:mod:`extractor.output.delta`) show nothing until their commit anyway. Every client
retries throttling and stalls with back-off (:mod:`extractor.output.store`).

S3 credentials come from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``); ``--endpoint-url`` (or
``AWS_ENDPOINT_URL``) points at an S3-compatible store. No secret is ever put in a message.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from extractor.errors import InvalidOption, OutputError
from extractor.output.store import DEFAULT_STORE, StoreConfig, s3_client

if TYPE_CHECKING:  # imported where a filesystem is made: ``extractor status`` needs none
    import pyarrow.fs as pafs

SCHEMES: Final = ("s3",)
#: What the extractor writes at the top of an output: one of them marks a directory as one.
OUTPUT_ENTRIES: Final = frozenset(
    {
        "invoices", "invoice_rows", "transactions", "identities", "_runs", "_journal",
        "_failures", "_staging", "_work", "_identities", "_extractor.lock", "_extractor_demo",
    }
)  # fmt: skip
DEFAULT_REGION: Final = "us-east-1"


@dataclass(frozen=True)
class Target:
    """A dataset's root: ``local`` for a directory, else ``bucket`` and ``prefix`` in S3."""

    uri: str
    local: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    store: StoreConfig = DEFAULT_STORE

    @classmethod
    def parse(cls, text: str, endpoint_url: str | None = None) -> Target:
        """``out``: a path, or ``s3://bucket[/prefix]``; a clear InvalidOption otherwise."""
        text = text.strip()
        scheme, sep, _ = text.partition("://")
        if not sep:
            if endpoint_url:
                raise InvalidOption("{endpoint_url} is for s3:// targets; {out} is a local path")
            return cls(text, local=_local(text))
        if scheme.lower() not in SCHEMES:
            raise InvalidOption(f"{{out}} {text}: use a local path or s3://bucket/prefix")
        parts = urllib.parse.urlsplit(text)
        if not parts.netloc or parts.query or parts.fragment:
            raise InvalidOption(f"{{out}} {text}: expected s3://bucket/prefix")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
            raise InvalidOption(f"{{endpoint_url}} {endpoint}: expected http(s)://host[:port]")
        prefix = parts.path.strip("/")
        uri = f"s3://{parts.netloc}/{prefix}".rstrip("/")
        return cls(uri, bucket=parts.netloc, prefix=prefix, endpoint_url=endpoint)

    @property
    def is_local(self) -> bool:
        return self.local is not None

    def work_dir(self, chosen: Path | None = None) -> Path:
        """Where this target's journal and staging live."""
        if chosen is not None:
            return chosen
        if self.local is not None:
            return self.local
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "extractor" / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def table_uri(self, name: str) -> str:
        if self.local is not None:
            return str((self.local / name).absolute())
        return f"{self.uri}/{name}"

    @property
    def region(self) -> str:
        environ = os.environ
        return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION

    def storage_options(self) -> dict[str, str]:
        """Options for deltalake (object_store); credentials it reads from the environment."""
        if self.local is not None:
            return {}
        options = {
            "AWS_REGION": self.region,
            # one writer per target (its lock, :mod:`extractor.output.lock`); no lock table
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
            **self.store.delta_options(),
        }
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem rooted at the target's bucket (for plain Parquet)."""
        import pyarrow.fs as pafs

        if self.local is not None:
            return pafs.LocalFileSystem()
        options = self.store.arrow_options()
        if not self.endpoint_url:
            return pafs.S3FileSystem(region=self.region, **options)
        endpoint = urllib.parse.urlsplit(self.endpoint_url)
        scheme: Literal["http", "https"] = "http" if endpoint.scheme == "http" else "https"
        return pafs.S3FileSystem(
            region=self.region, endpoint_override=endpoint.netloc, scheme=scheme, **options
        )

    def client(self) -> Any:
        """A boto3 S3 client for the target's store (retries and timeouts as :attr:`store`)."""
        return s3_client(self.endpoint_url, self.region, self.store)

    def key(self, relative: str) -> str:
        """The object path (bucket included) of ``relative`` under the target."""
        return "/".join(part for part in (self.bucket, self.prefix, relative) if part)

    def upload(self, source: Path, relative: str) -> None:
        """Copy the complete local file ``source`` to ``relative`` under the target: one
        object, which readers see only once it is whole."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        from extractor.output.lease import ensure_held  # it imports this module

        ensure_held(self)  # a run that lost the target's lock writes nothing more
        key = self.key(relative).split("/", 1)[1]
        try:
            self.client().upload_file(str(source), self.bucket, key)
        except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
            raise OutputError(f"cannot write {self.uri}/{relative}: {_reason(exc)}") from None


def _local(text: str, flag: str = "{out}") -> Path:
    """A local output's path; refused when empty (the current directory) or the root."""
    if not text:
        raise InvalidOption(f"{flag} is empty; give the directory to write the dataset into")
    path = Path(text).expanduser()
    if path.absolute() == Path(path.absolute().anchor):
        raise InvalidOption(f"{flag} {text} is the root directory; give a directory of its own")
    return path


def check_work_dir(text: str) -> Path:
    """``--work-dir``: refused as ``--out`` is when empty or the root, and when a file."""
    path = _local(text.strip(), "{work_dir}")
    check_output_dir(path, "{work_dir}")
    return path


def check_no_parquet_tables(out: Path) -> None:
    """Refuse Delta tables into a local directory whose tables are plain Parquet (another
    job's dataset): their files would mix, and neither reader would read the result."""
    for table in ("invoices", "invoice_rows", "transactions"):
        folder = out / table
        if folder.is_dir() and not (folder / "_delta_log").is_dir() and any(folder.iterdir()):
            raise InvalidOption(
                f"{{out}} {out} holds plain Parquet tables ({table}/), the dataset of another "
                "job; Delta tables go into a directory of their own: choose another {out}"
            )


def _reason(exc: Exception) -> str:
    """The first line of a storage error (AWS SDK messages run to several)."""
    return (str(exc).strip().splitlines() or ["unknown error"])[0][:300]


def check_output_dir(out: Path, flag: str = "{out}") -> None:
    """Refuse an output path that cannot hold the dataset, before any request is sent."""
    if out.exists() and not out.is_dir():
        raise InvalidOption(f"{flag} {out} is a file; give a directory (it is created if missing)")
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise InvalidOption(f"{flag} {out}: {parent} is a file, not a directory")
        if parent.exists():
            if not os.access(parent, os.W_OK):
                raise InvalidOption(f"{flag} {out}: {parent} is not writable")
            break


def check_not_foreign(out: Path) -> None:
    """Refuse the user's ``--out`` when it is a directory of other files (a home, a project):
    nothing is written into it. (A fleet's member folders are the extractor's own.)"""
    check_output_dir(out)
    foreign = _foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InvalidOption(
            f"{{out}} {out} holds other files ({shown}) and no extractor output; give a new or "
            "empty directory, or one an earlier run wrote"
        )


def _foreign_entries(out: Path) -> list[str]:
    """The names in ``out`` when it is a non-empty directory holding nothing the extractor
    writes (hidden names aside: ``.DS_Store``, a checkout's ``.git``); else none."""
    try:
        names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise InvalidOption(f"{{out}} {out}: {exc.strerror or exc}") from None
    return [] if OUTPUT_ENTRIES.intersection(names) else names
