"""S3 for the tests: moto's server on loopback (:func:`moto_server`), and a faulty proxy in
front of it (:class:`FaultyS3`) that answers some requests ``503 SlowDown`` and holds others
past the client's timeout, as S3 does under load.

The proxy forwards every request as it came (signature headers included; moto does not check
them) to the upstream endpoint, and its answer back. A fault hits every Nth request of the
methods it is set for, counted apart for each fault, so a retried request is never hit twice in
a row. A stalled request still reaches moto: its answer is held, as when S3 is slow to answer
what it has done; a client that gave up and retried sends it again. Binds 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import aiohttp
import boto3
import pytest
from aiohttp import web
from botocore.exceptions import EndpointConnectionError

ROOT = Path(__file__).resolve().parent.parent
#: Test credentials moto accepts; nothing real.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_REGION": "us-east-1",
}
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>FAULTY</RequestId></Error>"
)
#: Headers of one hop only; aiohttp sets its own.
_HOP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "expect", "te"}
)


@contextlib.contextmanager
def moto_server(*buckets: str) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with ``buckets`` made; its endpoint URL.

    In its own process: delta-rs holds the GIL through some calls (history), which would
    starve a server thread in this one. The AWS_* test variables must be set (:data:`AWS_ENV`).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _made(endpoint, buckets, server)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def moto_with_env(*buckets: str) -> Iterator[str]:
    """:func:`moto_server`, with the test credentials in the environment meanwhile (for a
    module's fixture: one server for all its tests)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with moto_server(*buckets) as endpoint:
            yield endpoint


def _made(endpoint: str, buckets: tuple[str, ...], server: subprocess.Popen[bytes]) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            return
        except EndpointConnectionError:
            assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)  # the server process starting: nothing to wait on but its port


#: Every method S3 answers.
METHODS: Final = ("GET", "PUT", "POST", "HEAD", "DELETE")


@dataclass(frozen=True)
class Fault:
    """Of every ``every`` requests of ``methods`` whose path matches ``paths``, the first
    ``burst`` are answered 503 SlowDown (S3 throttles for a while, not once), or, when
    ``stall`` is set, answered that many seconds late."""

    every: int
    burst: int = 1
    stall: float = 0.0
    methods: tuple[str, ...] = METHODS
    paths: str = ""

    @property
    def kind(self) -> str:
        return "stall" if self.stall else "slow_down"


class FaultyS3:
    """The proxy, in a process of its own (delta-rs holds the GIL through some calls, which
    would starve a server in the test's process): :meth:`start` (or ``with``) gives its URL,
    :meth:`served` what it did (``requests``, and the faults ``slow_down`` and ``stall``)."""

    def __init__(self, upstream: str, *faults: Fault) -> None:
        self.upstream, self.faults = upstream, faults
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.s3", self.upstream,
             json.dumps([asdict(fault) for fault in self.faults])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert self._process.stdout is not None
        port = self._process.stdout.readline().decode().strip()
        assert port.isdigit(), "the proxy did not start"
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def served(self) -> Counter[str]:
        with urllib.request.urlopen(f"{self.url}{SERVED}", timeout=30) as answer:
            return Counter(json.loads(answer.read()))

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.communicate(timeout=30)
            self._process = None

    def __enter__(self) -> FaultyS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Where the proxy says what it served (no bucket name starts with an underscore).
SERVED = "/_faulty/served"


class _Proxy:
    """The proxy's server side (in its own process)."""

    def __init__(self, upstream: str, faults: list[Fault]) -> None:
        self.upstream, self.faults = upstream, faults
        self.served: Counter[str] = Counter()
        self._paths = [re.compile(fault.paths) for fault in faults]
        self._client: aiohttp.ClientSession | None = None

    async def serve(self) -> None:
        app = web.Application(client_max_size=1024 * 1024 * 1024)
        app.router.add_get(SERVED, self._served)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._client = aiohttp.ClientSession(auto_decompress=False)
        print(runner.addresses[0][1], flush=True)
        orphaned = asyncio.Event()  # the test's process ended (its end of stdin closed)
        await asyncio.get_running_loop().connect_read_pipe(lambda: _Gone(orphaned), sys.stdin)
        await orphaned.wait()  # or terminated

    async def _served(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.served))

    def _hits(self, request: web.Request) -> list[Fault]:
        """The faults this request meets (each rule counts the requests it may hit)."""
        hits = []
        for number, fault in enumerate(self.faults):
            if request.method in fault.methods and self._paths[number].search(request.path):
                self.served[f"seen {number}"] += 1
                if (self.served[f"seen {number}"] - 1) % fault.every < fault.burst:
                    self.served[fault.kind] += 1
                    hits.append(fault)
        return hits

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.served["requests"] += 1
        body = await request.read()
        hits = self._hits(request)
        if any(fault.kind == "slow_down" for fault in hits):
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        status, headers, content = await self._forward(request, body)
        for fault in hits:
            await asyncio.sleep(fault.stall)  # the fault itself: an answer held back
        if request.method == "HEAD":
            return _head(status, headers)
        return web.Response(status=status, body=content, headers=headers)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.upstream + request.raw_path
        async with self._client.request(
            request.method, url, data=body, headers=headers, allow_redirects=False
        ) as answer:
            content = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":
                kept["Content-Length"] = answer.headers.get("Content-Length", "0")
            return answer.status, kept, content


class _Gone(asyncio.Protocol):
    def __init__(self, gone: asyncio.Event) -> None:
        self.gone = gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()


def _head(status: int, headers: dict[str, str]) -> web.StreamResponse:
    """A HEAD answer that keeps the object's Content-Length (aiohttp would say 0)."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = int(headers.get("Content-Length", "0"))
    return response


if __name__ == "__main__":
    upstream, faults = sys.argv[1], [Fault(**fault) for fault in json.loads(sys.argv[2])]
    asyncio.run(_Proxy(upstream, faults).serve())
