"""A TCP proxy in front of Mosquitto that holds back a client's SUBSCRIBE packets for a while.

It reproduces what a loaded or clustered broker may do (a subscription takes effect, and is
acknowledged, seconds after the SUBSCRIBE) while everything else the client sends passes at once.
It frames MQTT packets only by their fixed header; the broker behind it is the real Mosquitto.
"""

from __future__ import annotations

import asyncio
import threading

SUBSCRIBE = 8


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT control packet: fixed header byte, variable-length remaining length, body."""
    first = await reader.readexactly(1)
    length_bytes = b""
    multiplier, length = 1, 0
    while True:
        byte = await reader.readexactly(1)
        length_bytes += byte
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
    return first + length_bytes + await reader.readexactly(length)


class SubscribeDelayProxy:
    """Listens on 127.0.0.1:`port` (free) and forwards to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SubscribeDelayProxy":
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def upstream() -> None:
            while True:
                packet = await _read_packet(reader)
                if packet[0] >> 4 == SUBSCRIBE:
                    self._loop.call_later(self.delay_s, up_writer.write, packet)
                else:
                    up_writer.write(packet)

        async def downstream() -> None:
            while True:
                data = await up_reader.read(65536)
                if not data:
                    break
                writer.write(data)

        try:
            await asyncio.gather(upstream(), downstream())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            up_writer.close()
