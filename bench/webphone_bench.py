"""Web phone gateway bench: CPU and memory per concurrent call, and time to ringing.

A real worker (`python -m sipnodes.engine`), the real gateway (`python -m
sipnodes.webphone`) on its config, driven over Redis exactly as the portal drives it
(sipnodes/webphone/channels.py), and:

- as browsers, aiortc peer connections in this process (ICE, DTLS-SRTP, an audio track
  of silence sent as 20 ms G.711 frames, as Chromium sends with the gateway's answer);
- as callees, one SIPp UAS answering every call with `-rtp_echo`: the RTP the gateway
  sends it comes straight back, so the gateway carries audio both ways on every call.

For each step of `--calls` (default 1, 5, 10, 20 concurrent calls) it opens that many
web phone sessions (users 100...), places their calls to users 200... and waits for each
to be answered, then samples the gateway's CPU (utime + stime from /proc) over
`--seconds` and its RSS. It prints the gateway's figures with no session, with the
sessions registered but idle, and per step; per call = (step - idle sessions) / calls.
"Time to ringing" is from the `call` request (what the page's button posts) to the
gateway reporting the callee's 180 (the callee rang): p50 and max over all calls.

With `--video` every "browser" also sends VP8 (aiortc's test pattern, 640x480, encoded
in this process) and the callees answer and echo video too; the gateway forwards VP8
without decoding it either way.

Usage: .venv/bin/python bench/webphone_bench.py [--calls 1 5 10 20] [--seconds 10] [--video]
Needs Redis on 127.0.0.1:6379 (database 13 by default, BENCH_REDIS_URL) and `sipp`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aioice.ice
import redis.asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipnodes.webphone import channels  # noqa: E402
from tests.sipnodes.engine.processes import WorkerProcess  # noqa: E402
from tests.support import free_port  # noqa: E402

SIPP_DIR = ROOT / "tests" / "sipnodes" / "engine" / "sipp"
AV_SCENARIO = ROOT / "tests" / "browser" / "sipp" / "uas_answer_av.xml"
TICKS = os.sysconf("SC_CLK_TCK")
# The "browsers" gather ICE candidates on loopback, as the gateway of the test host does.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def cpu_share(pid: int, seconds: float) -> float:
    """The process's CPU over `seconds`, as a share of one core (1.0 = one core busy)."""
    before, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


class Driver:
    """The portal's side of the protocol, for many sessions at once."""

    def __init__(self, url: str, server_id: int) -> None:
        self.redis = redis.asyncio.Redis.from_url(url)
        self.server_id = server_id

    async def ask(self, session: str, action: str, **arguments: object) -> dict:
        request_id, body = channels.request(session, action, **arguments)
        await self.redis.lpush(channels.requests_key(self.server_id), body)
        reply = await self.redis.blpop([channels.reply_key(request_id)], timeout=30)
        if reply is None:
            raise RuntimeError(f"no answer to {action}")
        return json.loads(reply[1])

    async def keep_alive(self, sessions: list[str]) -> None:
        while True:
            for session in sessions:
                await self.redis.expire(channels.session_key(session), channels.SESSION_TTL)
            await asyncio.sleep(2)


class Browser:
    """One web phone page: its session and an aiortc peer connection sending silence."""

    def __init__(self, driver: Driver, number: str, video: bool) -> None:
        self.driver, self.number, self.video = driver, number, video
        self.session = channels.new_id()
        self.pc = RTCPeerConnection()
        self.states: asyncio.Queue[dict] = asyncio.Queue()

    async def open(self) -> None:
        key = channels.session_key(self.session)
        await self.driver.redis.hset(key, mapping={"number": self.number})
        await self.driver.redis.expire(key, channels.SESSION_TTL)
        pubsub = self.driver.redis.pubsub()
        await pubsub.subscribe(channels.events_channel(self.session))
        self.listener = asyncio.create_task(self._listen(pubsub))
        answer = await self.driver.ask(self.session, "open", number=self.number)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.number}: {answer}")
        self.tracks = [AudioStreamTrack()]
        if self.video:
            self.tracks.append(VideoStreamTrack())  # 640x480 at 30 frames/s, VP8 encoded here
        self.senders = [self.pc.addTrack(track) for track in self.tracks]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self.driver.ask(self.session, "offer", sdp=self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        self.sending(False)  # as the page: media only during a call (web_phone.js, `send`)

    def sending(self, on: bool) -> None:
        for sender, track in zip(self.senders, self.tracks, strict=True):
            sender.replaceTrack(track if on else None)

    async def _listen(self, pubsub) -> None:  # noqa: ANN001
        async for message in pubsub.listen():
            if message["type"] == "message":
                await self.states.put(json.loads(message["data"]))

    async def until(self, call_state: str, timeout: float = 20) -> None:
        seen = []
        try:
            async with asyncio.timeout(timeout):
                while (state := await self.states.get()).get("call") != call_state:
                    seen.append(state)
        except TimeoutError:
            raise RuntimeError(f"{self.number}: no {call_state} after {seen}") from None

    async def call(self, number: str) -> float:
        """Seconds from the call request to the callee's ringing; then waits for the answer."""
        started = time.monotonic()
        await self.driver.ask(self.session, "call", number=number)
        await self.until("ringing")
        rang = time.monotonic() - started
        await self.until("answered")
        self.sending(True)
        return rang

    async def close(self) -> None:
        await self.driver.ask(self.session, "close")
        await self.pc.close()
        self.listener.cancel()


def start_sipp_uas(tmp: Path, port: int, calls: int, video: bool) -> subprocess.Popen[bytes]:
    scenario = AV_SCENARIO if video else SIPP_DIR / "uas_answer.xml"
    return subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port)]
        + ["-m", str(calls), "-rtp_echo", "-mp", str(free_port()), "-nostdin"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def register_callees(tmp: Path, server_port: int, port: int, numbers: list[str]) -> None:
    csv = tmp / "callees.csv"
    lines = ["SEQUENTIAL"] + [f"{n};[authentication username={n} password=pw{n}]" for n in numbers]
    csv.write_text("\n".join(lines) + "\n")
    args = ["sipp", f"127.0.0.1:{server_port}", "-sf", str(SIPP_DIR / "register.xml")]
    args += ["-i", "127.0.0.1", "-p", str(port), "-inf", str(csv), "-m", str(len(numbers))]
    subprocess.run(args + ["-nostdin", "-timeout", "20s"], cwd=tmp, check=True, capture_output=True)


async def step(
    driver: Driver, pid: int, tmp: Path, port: int, calls: int, seconds: float, video: bool
):
    callers = [str(100 + i) for i in range(calls)]
    browsers = [Browser(driver, number, video) for number in callers]
    uas = start_sipp_uas(tmp, port, calls, video)
    try:
        time.sleep(0.5)
        for browser in browsers:
            await browser.open()
        alive = asyncio.create_task(driver.keep_alive([b.session for b in browsers]))
        await asyncio.sleep(5)  # past the DTLS handshakes
        idle_cpu, idle_rss = await cpu_share(pid, seconds), rss_mib(pid)
        rings = [await b.call(str(200 + i)) for i, b in enumerate(browsers)]
        await asyncio.sleep(2)
        busy_cpu, busy_rss = await cpu_share(pid, seconds), rss_mib(pid)
        for browser in browsers:
            await browser.close()
        alive.cancel()
    finally:
        uas.terminate()
        uas.wait(10)
    return idle_cpu, idle_rss, busy_cpu, busy_rss, rings


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--video", action="store_true", help="VP8 video too, both ways")
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    most = max(args.calls)
    numbers = [str(100 + i) for i in range(most)] + [str(200 + i) for i in range(most)]
    with tempfile.TemporaryDirectory(prefix="wp-bench-") as name:
        tmp = Path(name)
        worker = WorkerProcess(tmp, url, users=numbers, max_clients=500).start()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "sipnodes.webphone", "--config", str(worker.config_path)],
            cwd=ROOT,
            stdout=(tmp / "gateway.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            driver = Driver(url, worker.server_id)
            await asyncio.sleep(3)  # imports aiortc, binds, says it is alive
            uas_port = free_port()
            register_callees(tmp, worker.port, uas_port, numbers[most:])
            print(f"{'audio and video' if args.video else 'audio only'}")
            print(f"gateway with no session: RSS {rss_mib(gateway.pid):.1f} MiB")
            ring_times: list[float] = []
            for calls in args.calls:
                idle_cpu, idle_rss, cpu, rss, rings = await step(
                    driver, gateway.pid, tmp, uas_port, calls, args.seconds, args.video
                )
                ring_times += rings
                print(
                    f"{calls:3d} calls: CPU {cpu * 100:5.1f} % of a core "
                    f"({(cpu - idle_cpu) / calls * 100:.2f} % per call; "
                    f"{idle_cpu * 100:.1f} % with the sessions idle), RSS {rss:.1f} MiB "
                    f"(+{(rss - idle_rss) / calls:.2f} MiB per call over idle sessions "
                    f"at {idle_rss:.1f} MiB); ringing after "
                    f"p50 {statistics.median(rings) * 1000:.0f} ms, max {max(rings) * 1000:.0f} ms"
                )
            print(
                f"time from 'call' to ringing at the callee, all {len(ring_times)} calls: "
                f"p50 {statistics.median(ring_times) * 1000:.1f} ms, "
                f"max {max(ring_times) * 1000:.1f} ms"
            )
        finally:
            gateway.terminate()
            gateway.wait(15)
            worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
