"""Bulk MQTT packet handling on top of a paho-mqtt 2 client, for the 10,000 msg/s path.

paho handles each packet in pure Python with several ``recv`` calls (one byte of command, one
per byte of length, then the body), builds an ``MQTTMessage`` and MQTT 5 ``Properties`` per
message, matches the topic against callback filters, and sends each PUBACK with its own
``send`` and a wake-up of its network thread. Profiled in the bridge, that was over half of
the bridge's CPU at 3,000 msg/s. Here, for a client created by ``fleet.clients.mqtt_client``:

* :func:`install_bulk_reader` replaces the client's ``loop_read``: one large ``recv`` into a
  buffer, then every complete packet in it is cut out; PUBLISH (QoS 0/1) and PUBACK packets
  are decoded with a few slices and handed over as one list per read; every other packet
  (CONNACK, SUBACK, PINGRESP, DISCONNECT, QoS 2, ...) goes through paho's own handler, so
  connection, keepalive and reconnect behave exactly as paho does.
* :func:`queue_raw` hands paho's network thread many ready-made packets (e.g. 2,000 PUBACKs or
  PUBLISHes) as one write.
* :func:`puback_packets` / :func:`publish_packets` build those packets.

It relies on paho 2.x internals (``_sock``, ``_sock_recv``, ``_in_packet``,
``_packet_handle``, ``_packet_queue``, ``_loop_rc_handle``); ``constraints.txt`` pins the
tested version and ``tests/ingest/test_mqtt_fast.py`` checks the packets against paho's own
decoders.
"""

from __future__ import annotations

import struct
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

PUBLISH = 0x30
PUBACK = 0x40
#: One read takes at most this much; a busy socket is read again on the next loop round.
READ_SIZE = 1 << 20
_PUBACK_HEAD = struct.Struct("!BBH")


@dataclass(slots=True)
class Publish:
    """One PUBLISH as the broker sent it (topic as bytes: decoding is the caller's choice)."""

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    retain: bool = False  # set on a live publish only if subscribed with "retain as published"


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer (the fixed header's remaining length)."""
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position) of the variable-length integer at ``pos``; None if cut off."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(data) - pos >= 4:
        raise ValueError("malformed remaining length")
    return None


def decode_publish(command: int, body: bytes, v5: bool) -> Publish:
    """A PUBLISH packet's body (after the fixed header)."""
    qos = (command >> 1) & 3
    topic_len = (body[0] << 8) | body[1]
    pos = 2 + topic_len
    topic = body[2:pos]
    mid = 0
    if qos:
        mid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    if v5:
        found = _varint(body, pos)
        if found is None:
            raise ValueError("PUBLISH properties cut off")
        props_len, pos = found
        pos += props_len
    return Publish(topic, body[pos:], mid, qos, bool(command & 0x01))


def puback_packets(mids: Iterable[int]) -> bytes:
    """PUBACKs (success, no properties: the same 4 bytes in MQTT 3.1.1 and 5)."""
    pack = _PUBACK_HEAD.pack
    return b"".join([pack(PUBACK, 2, mid) for mid in mids])


def publish_packets(
    topics: Sequence[bytes], payloads: Sequence[bytes], mids: Sequence[int], v5: bool
) -> bytes:
    """QoS-1 PUBLISH packets, no properties, as one block of bytes."""
    no_props = b"\x00" if v5 else b""
    parts: list[bytes] = []
    append = parts.append
    for topic, payload, mid in zip(topics, payloads, mids, strict=True):
        variable = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + no_props
        append(bytes([PUBLISH | 0x02]) + remaining_length(len(variable) + len(payload)))
        append(variable)
        append(payload)
    return b"".join(parts)


def queue_raw(client: mqtt.Client, packets: bytes) -> None:
    """Send ready-made packets with the client's next write (thread-safe like paho's own).

    paho only looks at a queued packet's command for QoS-0 PUBLISH and DISCONNECT bookkeeping;
    marking the block as a PUBACK keeps it out of both."""
    if packets:
        client._packet_queue(PUBACK, packets, 0, 0)


PublishHandler = Callable[[list[Publish]], None]
PubackHandler = Callable[[list[tuple[int, int]]], None]


class BulkReader:
    """The replacement ``loop_read`` of one client (see :func:`install_bulk_reader`)."""

    def __init__(
        self,
        client: mqtt.Client,
        on_publishes: PublishHandler | None,
        on_pubacks: PubackHandler | None,
    ) -> None:
        self.client = client
        self.on_publishes = on_publishes
        self.on_pubacks = on_pubacks
        self.v5 = client._protocol == mqtt.MQTTv5
        self._buffer = b""
        self._sock: Any = None

    def loop_read(self, _max_packets: int = 1) -> mqtt.MQTTErrorCode:
        client = self.client
        sock = client._sock
        if sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._sock:  # a new connection: nothing of the old one is valid
            self._sock, self._buffer = sock, b""
        try:
            data = client._sock_recv(READ_SIZE)
        except BlockingIOError:
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError:
            return client._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return client._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with client._msgtime_mutex:
            client._last_bytes_received = mqtt.time_func()
        data = self._buffer + data if self._buffer else data
        try:
            rc = self._handle(data)
        except (ValueError, IndexError):  # a malformed packet: drop the connection, as paho does
            self._buffer = b""
            rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        if rc > 0:
            return client._loop_rc_handle(rc)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle(self, data: bytes) -> mqtt.MQTTErrorCode:
        publishes: list[Publish] = []
        pubacks: list[tuple[int, int]] = []
        pos, end, v5 = 0, len(data), self.v5
        rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while pos < end:
                command = data[pos]
                found = _varint(data, pos + 1)
                if found is None:
                    break
                length, start = found
                stop = start + length
                if stop > end:
                    break
                kind = command & 0xF0
                if kind == PUBLISH and self.on_publishes is not None and command & 0x06 != 0x04:
                    publishes.append(decode_publish(command, data[start:stop], v5))
                elif kind == PUBACK and self.on_pubacks is not None:
                    # Reason code byte only when not success (MQTT 5); 3.1.1 has none.
                    reason = data[start + 2] if length > 2 else 0
                    pubacks.append(((data[start] << 8) | data[start + 1], reason))
                else:
                    rc = self._paho(command, data[pos + 1 : start], data[start:stop])
                pos = stop
                if rc > 0:
                    break
        finally:
            self._buffer = data[pos:]
            # Hand over what was read before any error, so nothing taken is forgotten.
            if publishes and self.on_publishes is not None:
                self.on_publishes(publishes)
            if pubacks and self.on_pubacks is not None:
                self.on_pubacks(pubacks)
        return rc

    def _paho(self, command: int, length_bytes: bytes, body: bytes) -> mqtt.MQTTErrorCode:
        """Let paho handle one packet exactly as if its own reader had read it."""
        client = self.client
        client._in_packet = {
            "command": command,
            "have_remaining": 1,
            "remaining_count": list(length_bytes),
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc: mqtt.MQTTErrorCode = client._packet_handle()
        finally:
            client._in_packet = {
                "command": 0,
                "have_remaining": 0,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": 0,
                "packet": bytearray(b""),
                "to_process": 0,
                "pos": 0,
            }
        return rc


def install_bulk_reader(
    client: mqtt.Client,
    on_publishes: PublishHandler | None = None,
    on_pubacks: PubackHandler | None = None,
) -> BulkReader:
    """Read ``client``'s packets in bulk: PUBLISHes to ``on_publishes`` and PUBACKs (message
    id, reason code) to ``on_pubacks``, one list per read, on paho's network thread. A kind
    without a handler is left to paho (its ``on_message`` / ``on_publish``)."""
    reader = BulkReader(client, on_publishes, on_pubacks)
    client.loop_read = types.MethodType(  # type: ignore[method-assign]
        lambda _self, max_packets=1: reader.loop_read(max_packets), client
    )
    return reader
