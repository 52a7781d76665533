"""HTTP load in a process of its own: wrk with bench/post.lua, or this module's asyncio client when wrk
is missing (`python -m bench.loadgen URL BODY_FILE CONCURRENCY SECONDS`). Both report the same JSON."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import BenchError, percentile
from harness.processes import ROOT

LUA = Path(__file__).resolve().parent / "post.lua"
WRK_MISSING = (
    "wrk is not installed (apt-get install -y wrk); using the slower Python asyncio client, "
    "which takes a core of its own on this machine"
)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def load(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    *,
    prefer_wrk: bool = True,
    api_key: str | None = None,
) -> dict[str, Any]:
    """POST ``body`` to ``url`` from ``concurrency`` kept-alive connections for ``seconds``
    (with ``X-API-Key: api_key`` when given).

    Returns requests/s, latency percentiles (ms) and error counts; the client is another process.
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        if prefer_wrk and have_wrk():
            args = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds:.0f}s"]
            args += ["--timeout", "10s", "-s", str(LUA), url]
            env = {"BENCH_BODY_FILE": body_file.name, "PATH": "/usr/bin:/bin"}
            if api_key:
                env["BENCH_API_KEY"] = api_key
            tool = "wrk"
        else:
            args = [
                sys.executable,
                "-m",
                "bench.loadgen",
                url,
                body_file.name,
                str(concurrency),
                str(seconds),
                *([api_key] if api_key else []),
            ]
            env = None
            tool = "python-asyncio"
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if not lines:
        raise BenchError(f"{tool} gave no result (exit {done.returncode}): {done.stdout}{done.stderr}")
    raw = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    return {
        "tool": tool,
        "concurrency": concurrency,
        "seconds": round(duration, 2),
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / duration, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "http_errors": raw["http_errors"],
        "socket_errors": raw["socket_errors"],
        "timeouts": raw["timeouts"],
    }


# --- the fallback client ---------------------------------------------------------------------------


async def _connection(host: str, port: int, request: bytes, deadline: float, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError):
            out["socket_errors"] += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            continue
        out["latencies"].append(time.perf_counter() - started)
        if int(head.split(b" ", 2)[1]) >= 400:
            out["http_errors"] += 1
    writer.close()


async def _main(
    url: str, body: bytes, concurrency: int, seconds: float, api_key: str | None = None
) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + (f"X-API-Key: {api_key}\r\n" if api_key else "") + "\r\n"
    ).encode() + body
    out: dict[str, Any] = {"latencies": [], "socket_errors": 0, "http_errors": 0}
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(parts.hostname, parts.port, request, deadline, out) for _ in range(concurrency))
    )
    duration = time.monotonic() - started
    lat = sorted(out["latencies"])

    def us(pct: float) -> int:
        return int((percentile(lat, pct) or 0) * 1e6)

    return {
        "requests": len(lat),
        "duration_us": int(duration * 1e6),
        "http_errors": out["http_errors"],
        "socket_errors": out["socket_errors"],
        "timeouts": 0,
        "p50_us": us(50),
        "p90_us": us(90),
        "p99_us": us(99),
        "max_us": int(lat[-1] * 1e6) if lat else 0,
        "mean_us": sum(lat) / len(lat) * 1e6 if lat else 0,
    }


if __name__ == "__main__":
    target, body_path, conns, secs = sys.argv[1:5]
    key = sys.argv[5] if len(sys.argv) > 5 else None
    result = asyncio.run(_main(target, Path(body_path).read_bytes(), int(conns), float(secs), key))
    print("BENCH_JSON " + json.dumps(result), flush=True)
