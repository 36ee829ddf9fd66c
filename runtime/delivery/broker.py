"""A small embedded MQTT broker so `smearscope demo` runs device -> MQTT -> server on a fresh machine.

Scope, stated plainly: loopback demos and tests of the demo path, not production (use Mosquitto,
see deploy/). It speaks MQTT 5 and 3.1.1 over plain TCP with no authentication, and supports what
the smearscope path uses: CONNECT with clean start / session expiry (persistent sessions kept in
memory), last will, PUBLISH at QoS 0 and 1 with PUBACK (0x10 when nobody subscribed), retained
messages, SUBSCRIBE / UNSUBSCRIBE with + and # wildcards, MQTT 5 shared subscriptions
($share/group/filter, round robin), PINGREQ and DISCONNECT. QoS 2 is refused. Nothing persists
across a broker restart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import threading
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

# MQTT 5 property id -> wire type (for parsing and skipping).
_PROPS = {0x01: "b", 0x02: "i", 0x03: "s", 0x08: "s", 0x09: "d", 0x0B: "v", 0x11: "i", 0x12: "s", 0x13: "h",
          0x15: "s", 0x16: "d", 0x17: "b", 0x18: "i", 0x19: "b", 0x1A: "s", 0x1C: "s", 0x1F: "s", 0x21: "h",
          0x22: "h", 0x23: "h", 0x24: "b", 0x25: "b", 0x26: "p", 0x27: "i", 0x28: "b", 0x29: "b", 0x2A: "b"}
SESSION_EXPIRY = 0x11


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed."""


# -- wire helpers ------------------------------------------------------------------------------
def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + encode_varint(len(body)) + body


class Reader:
    """Cursor over one packet's body."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        value, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult *= 128
        raise ProtocolError("malformed variable byte integer")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("invalid UTF-8 in a string field") from exc

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def properties(self) -> dict[int, object]:
        end = self.varint() + self.pos
        props: dict[int, object] = {}
        while self.pos < end:
            pid = self.varint()
            kind = _PROPS.get(pid)
            if kind is None:
                raise ProtocolError(f"unknown property {pid:#x}")
            value: object = {"b": self.byte, "h": self.u16, "i": self.u32, "v": self.varint, "s": self.string,
                             "d": self.binary}.get(kind, lambda: (self.string(), self.string()))()
            props[pid] = value
        return props


def topic_matches(filt: str, topic: str) -> bool:
    """MQTT filter matching; wildcards never match a first level starting with `$`."""
    f, t = filt.split("/"), topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


# -- broker state ------------------------------------------------------------------------------
@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass
class Session:
    client_id: str
    persistent: bool
    subs: dict[str, int] = field(default_factory=dict)  # filter (without $share) -> max QoS; shared keyed "$share/g/f"
    queue: deque[Message] = field(default_factory=deque)
    inflight: dict[int, Message] = field(default_factory=dict)
    conn: "Connection | None" = None
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        while True:
            pid = next(self.ids) % 65535 + 1
            if pid not in self.inflight:
                return pid


class Connection:
    """One client's TCP connection."""

    def __init__(self, broker: "EmbeddedBroker", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.broker, self.reader, self.writer = broker, reader, writer
        self.version = 5
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive = 0

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def deliver(self, msg: Message, qos: int, session: Session) -> None:
        body = encode_str(msg.topic)
        flags = (qos << 1) | (1 if msg.retain else 0)
        if qos:
            pid = session.next_id()
            session.inflight[pid] = Message(msg.topic, msg.payload, qos, msg.retain)
            body += struct.pack("!H", pid)
        if self.version == 5:
            body += b"\x00"
        self.send(packet(PUBLISH, flags, body + msg.payload))

    async def run(self) -> None:
        clean = False
        try:
            while True:
                timeout = self.keepalive * 1.5 if self.keepalive else None
                header = await asyncio.wait_for(self.reader.readexactly(1), timeout)
                length, mult = 0, 1
                for _ in range(4):
                    b = (await self.reader.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                if length > self.broker.max_packet_size:
                    self._disconnect(0x95)
                    break
                body = await self.reader.readexactly(length)
                ptype, flags = header[0] >> 4, header[0] & 0x0F
                if self.session is None and ptype != CONNECT:
                    raise ProtocolError("first packet must be CONNECT")
                if ptype == DISCONNECT:
                    clean = True
                    break
                self.broker.handle(self, ptype, flags, Reader(body))
                await self.writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        except ProtocolError as exc:
            log.warning("closing client %s: %s", self.session.client_id if self.session else "?", exc)
            if self.version == 5 and self.session is not None:
                self._disconnect(0x81)
        finally:
            self.broker.closed(self, clean)
            self.writer.close()

    def _disconnect(self, reason: int) -> None:
        if self.version == 5:
            self.send(packet(DISCONNECT, 0, bytes([reason, 0])))


class EmbeddedBroker:
    """Run with `start()` (a background thread) and `stop()`; `port` is set after start."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_packet_size: int = 1024 * 1024) -> None:
        self.host, self.port, self.max_packet_size = host, port, max_packet_size
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}
        self._share_turn: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "EmbeddedBroker":
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("embedded MQTT broker did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for s in self.sessions.values():
                if s.conn is not None:
                    s.conn.writer.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(self, reader, writer).run()

    # -- packets -------------------------------------------------------------------------------------
    def handle(self, conn: Connection, ptype: int, flags: int, r: Reader) -> None:
        if ptype == CONNECT:
            self._connect(conn, r)
        elif ptype == PUBLISH:
            self._publish(conn, flags, r)
        elif ptype == PUBACK:
            conn.session.inflight.pop(r.u16(), None)
            self._drain(conn.session)
        elif ptype == SUBSCRIBE:
            self._subscribe(conn, r)
        elif ptype == UNSUBSCRIBE:
            pid = r.u16()
            if conn.version == 5:
                r.properties()
            codes = bytearray()
            while r.pos < len(r.data):
                codes.append(0 if conn.session.subs.pop(r.string(), None) is not None else 0x11)
            body = struct.pack("!H", pid) + (b"\x00" + bytes(codes) if conn.version == 5 else b"")
            conn.send(packet(UNSUBACK, 0, body))
        elif ptype == PINGREQ:
            conn.send(packet(PINGRESP, 0, b""))
        else:
            raise ProtocolError(f"unsupported packet type {ptype}")

    def _connect(self, conn: Connection, r: Reader) -> None:
        if conn.session is not None:
            raise ProtocolError("second CONNECT")
        name, level = r.string(), r.byte()
        if name != "MQTT" or level not in (4, 5):
            conn.send(packet(CONNACK, 0, b"\x00\x01" if level != 5 else b"\x00\x84\x00"))
            raise ProtocolError(f"unsupported protocol {name!r} level {level}")
        conn.version = level
        cflags = r.byte()
        conn.keepalive = r.u16()
        expiry = 0
        if level == 5:
            expiry = int(r.properties().get(SESSION_EXPIRY, 0))
        given = r.string()
        client_id = given or f"auto-{next(self._ids)}"
        clean = bool(cflags & 0x02)
        if cflags & 0x04:
            if level == 5:
                r.properties()
            will_topic, will_payload = r.string(), r.binary()
            conn.will = Message(will_topic, will_payload, (cflags >> 3) & 0x03, bool(cflags & 0x20))
        if cflags & 0x80:
            r.string()
        if cflags & 0x40:
            r.binary()
        persistent = (expiry > 0) if level == 5 else not clean
        old = self.sessions.get(client_id)
        if old is not None and old.conn is not None:  # session takeover
            old.conn.session = None
            old.conn.writer.close()
            old.conn = None
        present = old is not None and not clean
        session = old if present else Session(client_id, persistent)
        session.persistent = persistent
        session.conn = conn
        conn.session = session
        self.sessions[client_id] = session
        body = bytes([1 if present else 0, 0])
        if level == 5:
            props = b""
            if not given:
                props += b"\x12" + encode_str(client_id)
            props += b"\x24\x01" + b"\x2a\x01"  # maximum QoS 1, shared subscriptions available
            body += encode_varint(len(props)) + props
        conn.send(packet(CONNACK, 0, body))
        for pid, msg in list(session.inflight.items()):  # resend unacknowledged, same packet ids
            body = encode_str(msg.topic) + struct.pack("!H", pid) + (b"\x00" if level == 5 else b"")
            conn.send(packet(PUBLISH, 0x08 | (msg.qos << 1), body + msg.payload))
        self._drain(session)

    def _publish(self, conn: Connection, flags: int, r: Reader) -> None:
        qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
        topic = r.string()
        if qos == 2 or qos == 3:
            raise ProtocolError("QoS 2 is not supported by the embedded broker")
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError(f"invalid topic name {topic!r}")
        pid = r.u16() if qos else 0
        if conn.version == 5:
            r.properties()
        msg = Message(topic, r.rest(), qos, retain)
        if retain:
            if msg.payload:
                self.retained[topic] = msg
            else:
                self.retained.pop(topic, None)
        matched = self.route(msg)
        if qos:
            reason = b"" if conn.version == 4 else (b"\x00" if matched else b"\x10")
            conn.send(packet(PUBACK, 0, struct.pack("!H", pid) + reason))

    def _subscribe(self, conn: Connection, r: Reader) -> None:
        pid = r.u16()
        if conn.version == 5:
            r.properties()
        codes = bytearray()
        new_filters = []
        while r.pos < len(r.data):
            filt, options = r.string(), r.byte()
            qos = min(options & 0x03, 1)
            conn.session.subs[filt] = qos
            codes.append(qos)
            new_filters.append((filt, qos))
        body = struct.pack("!H", pid) + (b"\x00" if conn.version == 5 else b"") + bytes(codes)
        conn.send(packet(SUBACK, 0, body))
        for filt, qos in new_filters:
            if filt.startswith("$share/"):
                continue
            for msg in list(self.retained.values()):
                if topic_matches(filt, msg.topic):
                    conn.deliver(Message(msg.topic, msg.payload, min(msg.qos, qos), True), min(msg.qos, qos),
                                 conn.session)

    # -- routing ----------------------------------------------------------------------------------------
    def route(self, msg: Message) -> bool:
        """Deliver to every matching session (one member per shared group); True if anyone matched."""
        matched = False
        groups: dict[str, list[tuple[Session, int]]] = {}
        for session in self.sessions.values():
            best = -1
            for filt, qos in session.subs.items():
                if filt.startswith("$share/"):
                    _, group, real = filt.split("/", 2)
                    if topic_matches(real, msg.topic):
                        groups.setdefault(f"{group}/{real}", []).append((session, qos))
                elif topic_matches(filt, msg.topic):
                    best = max(best, qos)
            if best >= 0:
                matched = True
                self._offer(session, msg, min(msg.qos, best))
        for key, members in groups.items():
            matched = True
            online = [m for m in members if m[0].conn is not None] or members
            turn = self._share_turn.get(key, 0) % len(online)
            self._share_turn[key] = turn + 1
            session, qos = online[turn]
            self._offer(session, msg, min(msg.qos, qos))
        return matched

    def _offer(self, session: Session, msg: Message, qos: int) -> None:
        out = Message(msg.topic, msg.payload, qos, False)
        if session.conn is not None and len(session.inflight) < 100:
            session.conn.deliver(out, qos, session)
        elif qos == 1 and (session.persistent or session.conn is not None):
            session.queue.append(out)

    def _drain(self, session: Session) -> None:
        while session.conn is not None and session.queue and len(session.inflight) < 100:
            msg = session.queue.popleft()
            session.conn.deliver(msg, msg.qos, session)

    def closed(self, conn: Connection, clean: bool) -> None:
        session = conn.session
        if session is None:
            return
        if conn.will is not None and not clean:
            will = conn.will
            if will.retain:
                self.retained[will.topic] = will
            self.route(will)
        session.conn = None
        if not session.persistent:
            self.sessions.pop(session.client_id, None)
