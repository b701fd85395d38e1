"""The gateway's asyncio shell: one SIP socket, Redis, and per web phone session a `Phone`
(sipnodes/webphone/sip.py), an RTP socket and an aiortc peer connection.

It runs while web phones of its server are open: started by the node agent when the
first page opens (sipnodes/node_agent.py, `start_webphone`), it exits with code 0 once
its last session has been gone for `channels.IDLE_EXIT` seconds. supervisord restarts it
only when it exits otherwise (a crash).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import redis.asyncio
from aiortc import (
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from sipnodes.engine.config import Config, ConfigError, load_config
from sipnodes.engine.sipmsg import Peer, Send
from sipnodes.engine.timers import Scheduler
from sipnodes.webphone import channels
from sipnodes.webphone.media import (
    FromSip,
    FromSipVideo,
    RtpPort,
    browser_keyframe,
    tap_video,
    to_sip,
)
from sipnodes.webphone.sip import (
    CallChanged,
    CallState,
    Event,
    MediaChanged,
    Phone,
    Phones,
    Registered,
)

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 8.0  # seconds an `open` waits for the worker's answer to the REGISTER
PREFERRED = ("audio/PCMU", "audio/PCMA")  # the browser's law then matches the SIP side's
VIDEO_CODECS = ("video/VP8", "video/rtx")  # VP8 is what the gateway forwards undecoded
VIDEO_QUEUE = 400  # video packets from the SIP side waiting for aiortc (a few frames)


@dataclass(eq=False)
class Session:
    """One open web phone page: its phone, its RTP socket, its peer connection."""

    session_id: str
    phone: Phone
    rtp: RtpPort
    from_sip: FromSip
    pc: RTCPeerConnection | None = None
    video: RtpPort | None = None  # once the page sends video
    from_sip_video: FromSipVideo | None = None
    video_receiver: RTCRtpReceiver | None = None
    state: dict[str, Any] = field(default_factory=dict)
    registered: asyncio.Future[Registered] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    publishing: asyncio.Lock = field(default_factory=asyncio.Lock)  # changes go out in order


class Gateway:
    def __init__(self, config: Config, config_path: str = "") -> None:
        self.config = config
        self.config_path = config_path
        self.boot = channels.new_id()
        self.scheduler = Scheduler()
        self.outbox: list[Send] = []
        self.phones = Phones(self.scheduler, self.outbox)
        self.server = Peer("UDP", config.listen.address, config.listen.sip_port)
        self.sessions: dict[str, Session] = {}
        self.locks: dict[str, asyncio.Lock] = {}  # per session: its requests in order
        self.serving: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.idle_since = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.sip: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(config.redis_url)
        # ICE candidates on the address the host advertises, the one browsers reach
        # (aioice would take every other interface's address, and never loopback).
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [config.public_address]

    # ---- lifetime -----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.sip, _ = await loop.create_datagram_endpoint(
            lambda: _SipSocket(self), local_addr=(self.config.listen.address, 0)
        )
        self.local = self.sip.get_extra_info("sockname")[:2]
        log.info("web phone gateway of server %s on %s:%s", self.config.server_id, *self.local)
        tasks = [
            asyncio.create_task(self._requests(), name="requests"),
            asyncio.create_task(self._watch(), name="watch"),
        ]
        await self.stopping.wait()
        for session in list(self.sessions.values()):
            await self._close(session)
        await asyncio.sleep(0.3)  # the last BYEs and REGISTERs go out (no answers awaited)
        tasks += self.serving
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.redis.delete(channels.alive_key(self.config.server_id))
        await self.redis.aclose()
        self.sip.close()

    async def _watch(self) -> None:
        """Say we are alive; end sessions whose page is gone; exit when idle."""
        while True:
            try:
                await self._check_sessions()
            except (redis.RedisError, OSError) as exc:
                log.warning("Redis: %s; sessions are checked again shortly", exc)
            if self.sessions:
                self.idle_since = time.monotonic()
            elif time.monotonic() - self.idle_since > channels.IDLE_EXIT:
                log.info("no web phone open for %.0f s: exiting", channels.IDLE_EXIT)
                self.stopping.set()
            await asyncio.sleep(channels.ALIVE_EVERY)

    async def _check_sessions(self) -> None:
        alive = channels.alive_key(self.config.server_id)
        await self.redis.set(alive, self.boot, ex=channels.ALIVE_TTL)
        for session in list(self.sessions.values()):
            if not await self.redis.exists(channels.session_key(session.session_id)):
                log.info("session %s: its page is gone", session.session_id)
                await self._close(session)

    # ---- requests from the portal ---------------------------------------------------------

    async def _requests(self) -> None:
        """Serve the portal's requests: sessions at once, each session's in order."""
        key = channels.requests_key(self.config.server_id)
        while True:
            try:
                item = await self.redis.brpop([key], timeout=1)
            except (redis.RedisError, OSError) as exc:
                log.warning("Redis: %s; reading requests again in a second", exc)
                await asyncio.sleep(1)
                continue
            if item is not None:
                task = asyncio.create_task(self._serve(item[1]))
                self.serving.add(task)
                task.add_done_callback(self.serving.discard)

    async def _serve(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
        except ValueError:
            return
        if not isinstance(request, dict) or "id" not in request:
            return
        lock = self.locks.setdefault(str(request.get("session", "")), asyncio.Lock())
        try:
            async with lock:
                answer = await self._handle(request)
        except Exception as exc:  # one bad request must not end the gateway
            log.exception("request failed")
            answer = {"ok": False, "error": str(exc)}
        reply = channels.reply_key(str(request["id"]))
        try:
            await self.redis.lpush(reply, json.dumps({"boot": self.boot, **answer}))
            await self.redis.expire(reply, channels.REPLY_TTL)
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis: %s; the answer to %s is lost", exc, request.get("action"))

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        session_id, action = str(request.get("session", "")), request.get("action")
        if action == "open":
            return await self._open(session_id, str(request.get("number", "")))
        session = self.sessions.get(session_id)
        if session is None:
            return {"ok": False, "error": "no such session"}
        if action == "offer":
            return await self._offer(session, str(request.get("sdp", "")))
        if action == "close":
            await self._close(session)
            return {"ok": True}
        now = self._now()
        phone = session.phone
        done = {
            "call": lambda: phone.dial(str(request.get("number", "")), now),
            "answer": lambda: phone.answer(now),
            "hangup": lambda: phone.hang_up(now),
            "hold": lambda: phone.hold(True, now),
            "resume": lambda: phone.hold(False, now),
        }.get(str(action), lambda: False)()
        self._pump()
        return {"ok": bool(done)}

    async def _open(self, session_id: str, number: str) -> dict[str, Any]:
        self._reload()
        user = self.config.users_by_number.get(number)
        if user is None or not session_id or session_id in self.sessions:
            return {"ok": False, "error": "no such user"}
        loop = asyncio.get_running_loop()
        rtp = RtpPort()
        await loop.create_datagram_endpoint(lambda: rtp, local_addr=(self.local[0], 0))
        assert rtp.transport is not None
        contact_user = f"wp-{number}-{session_id[:8]}"
        phone = Phone(
            number=number,
            contact_user=contact_user,
            realm=self.config.realm,
            ha1={"MD5": user.ha1_md5, "SHA-256": user.ha1_sha256},
            server=self.server,
            local=self.local,
            rtp=(self.config.public_address, rtp.transport.get_extra_info("sockname")[1]),
            layer=self.phones.layer,
            scheduler=self.scheduler,
            emit=lambda event: self._on_event(session, event),  # bound just below
        )
        session = Session(session_id, phone, rtp, FromSip(rtp))
        session.registered = loop.create_future()
        self.sessions[session_id] = session
        self.phones.add(phone)
        session.state = {"registration": "pending", "call": CallState.IDLE.value}
        session.phone.register(self._now())
        self._pump()
        try:
            outcome = await asyncio.wait_for(session.registered, OPEN_TIMEOUT)
        except TimeoutError:
            outcome = Registered(False, "408 no answer from the server")
        if not outcome.ok:
            self._forget(session)
        return {"ok": outcome.ok, "error": outcome.reason}

    def _reload(self) -> None:
        """Read the worker's config again: a user added, or a password changed (a new HA1),
        since the gateway started. The addresses stay those it started with."""
        if not self.config_path:
            return
        try:
            self.config = load_config(self.config_path)
        except (ConfigError, OSError) as exc:
            log.warning("config not re-read, the one read before stays: %s", exc)

    async def _offer(self, session: Session, sdp: str) -> dict[str, Any]:
        """The page's offer: a peer connection that lasts as long as the page."""
        if session.pc is not None:
            await session.pc.close()
        pc = session.pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                task = asyncio.create_task(to_sip(track, session.rtp))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        kinds: set[str] = set()
        for transceiver in pc.getTransceivers():
            if transceiver.kind in kinds:
                continue  # one stream of each kind; aiortc answers the others inactive
            kinds.add(transceiver.kind)
            if transceiver.kind == "audio":
                transceiver.setCodecPreferences(_codecs("audio", PREFERRED))
                pc.addTrack(session.from_sip)
            elif transceiver.kind == "video":
                await self._video(session)
                assert session.video is not None and session.from_sip_video is not None
                transceiver.setCodecPreferences(_codecs("video", VIDEO_CODECS))
                pc.addTrack(session.from_sip_video)
                tap_video(transceiver.receiver, session.video)
                session.video_receiver = transceiver.receiver
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        session.from_sip.browser_pt = 8 if "m=audio 9 UDP/TLS/RTP/SAVPF 8" in answer else 0
        return {"ok": True, "sdp": answer, "type": "answer"}

    async def _video(self, session: Session) -> None:
        """The session's video port towards the worker; the phone offers video from now."""
        if session.video is not None:
            return
        port = session.video = RtpPort(frozenset(), VIDEO_QUEUE)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: port, local_addr=(self.local[0], 0))
        assert port.transport is not None
        session.from_sip_video = FromSipVideo(port)
        number = port.transport.get_extra_info("sockname")[1]
        session.phone.video_rtp = (self.config.public_address, number)

    async def _keyframes(self, session: Session) -> None:
        """Video starts: both ends send a key frame (asked three times, a second apart,
        in case the first request precedes the first packet)."""
        for _ in range(3):
            if session.video is None or session.video_receiver is None:
                return
            await browser_keyframe(session.video_receiver, session.video)
            session.video.request_keyframe()
            await asyncio.sleep(1)

    async def _close(self, session: Session) -> None:
        if self.sessions.get(session.session_id) is not session:
            return
        session.phone.close(self._now())
        self._pump()
        self._forget(session)
        for task in session.tasks:
            task.cancel()
        if session.pc is not None:
            await session.pc.close()
        session.from_sip.stop()
        if session.from_sip_video is not None:
            session.from_sip_video.stop()
        await self._publish(session, {"closed": True})

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)
        self.locks.pop(session.session_id, None)
        self.phones.remove(session.phone)
        session.rtp.close()
        if session.video is not None:
            session.video.close()

    # ---- the phone's events -------------------------------------------------------------

    def _on_event(self, session: Session, event: Event) -> None:
        if isinstance(event, MediaChanged):
            self._media(session, event)
            return
        if isinstance(event, Registered):
            if session.registered is not None and not session.registered.done():
                session.registered.set_result(event)
            session.state["registration"] = "registered" if event.ok else "refused"
            session.state["reason"] = event.reason
        elif isinstance(event, CallChanged):
            self._call_state(session, event)
        self._spawn(session, self._publish(session, dict(session.state)))

    def _media(self, session: Session, event: MediaChanged) -> None:
        port = session.rtp if event.kind == "audio" else session.video
        if port is None:
            return
        was_sending = port.sending
        port.remote, port.payload_type = event.remote, event.payload_type
        port.sending = event.remote is not None and event.sending
        if event.kind == "video":
            port.accepted = frozenset({event.payload_type}) if event.remote else frozenset()
            if port.sending and not was_sending:
                self._spawn(session, self._keyframes(session))

    def _call_state(self, session: Session, event: CallChanged) -> None:
        state = session.state
        if event.state is CallState.ANSWERED and state.get("call") != "answered":
            state["since"] = time.time()
        state.update(
            call=event.state.value, peer=event.peer, call_reason=event.reason, held=event.held
        )

    def _spawn(self, session: Session, coro: Any) -> None:
        task = asyncio.create_task(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _publish(self, session: Session, state: dict[str, Any]) -> None:
        data = json.dumps(state)
        async with session.publishing:  # FIFO: the page sees the changes in their order
            await self.redis.set(
                channels.state_key(session.session_id), data, ex=4 * channels.SESSION_TTL
            )
            await self.redis.publish(channels.events_channel(session.session_id), data)

    # ---- SIP in and out -----------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.phones.receive(data, Peer("UDP", addr[0], addr[1]), self._now())
        self._pump()

    def _pump(self) -> None:
        """Fire due timers, send what the phones wrote, re-arm the one timer."""
        loop = asyncio.get_running_loop()
        self.scheduler.run_due(loop.time())
        if self.sip is not None:
            for send in self.outbox:
                self.sip.sendto(send.data, (send.peer.host, send.peer.port))
        self.outbox.clear()
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.scheduler.next_deadline()
        self._timer = None if deadline is None else loop.call_at(deadline, self._pump)


class _SipSocket(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.gateway.datagram(data, addr)
        except Exception:  # one odd datagram must not end the gateway
            log.exception("datagram from %s:%s", *addr)


def _codecs(kind: str, wanted: tuple[str, ...]) -> list[RTCRtpCodecCapability]:
    """aiortc's codecs of a kind that are `wanted`, in that order."""
    found = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType in wanted]
    return sorted(found, key=lambda c: wanted.index(c.mimeType))
