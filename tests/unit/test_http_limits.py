"""The body bound every server puts in front of its routes."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from evroam.protocols.http_limits import BodyLimit


def app(max_bytes: int) -> TestClient:
    inner = FastAPI()

    @inner.post("/echo-length")
    async def echo_length(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @inner.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    inner.add_middleware(BodyLimit, max_bytes=max_bytes)
    return TestClient(inner)


def chunks(total: int, size: int = 100) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_a_body_within_the_bound_reaches_the_route_whole() -> None:
    client = app(1000)
    assert client.post("/echo-length", content=b"x" * 1000).json() == {"length": 1000}
    assert client.post("/echo-length", content=chunks(999)).json() == {"length": 999}
    assert client.get("/ping").json() == {"ok": "yes"}


def test_a_declared_length_over_the_bound_is_refused_naming_the_limit() -> None:
    response = app(1000).post("/echo-length", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.json() == {"detail": "body: larger than 1000 bytes"}


def test_a_streamed_body_is_refused_once_it_passes_the_bound() -> None:
    response = app(1000).post("/echo-length", content=chunks(5000))
    assert response.status_code == 413
    assert response.json() == {"detail": "body: larger than 1000 bytes"}
