"""
Counts the messages an MQTT broker delivers on one topic filter, for
bench/relay.py's grott-mqtt targets: what a subscriber (Home Assistant, a
dashboard) actually gets, next to what grott says it published.

    python bench/mqttcount.py PORT TOPIC

A bare MQTT 3.1.1 client on a plain socket (no paho: its per-message
Python work would take a large share of the 2 cores the benchmark shares):
it subscribes at QoS 1, acknowledges every PUBLISH (one write per read),
and counts them.  Protocol on standard input and output, one line each:

    -> {"event": "subscribed"}
    <- count
    -> {"messages": N, "bytes": B}

It exits when its standard input closes or the broker goes away.
"""

import json
import os
import select
import socket
import struct
import sys


def _string(text):
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind, body):
    length = bytearray()
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([kind]) + bytes(length) + body


def _read_packet(sock, buf):
    """One whole packet (first byte, body) from a blocking socket."""
    while True:
        parsed = _parse(buf, 0)
        if parsed is not None:
            kind, start, end = parsed
            body = bytes(buf[start:end])
            del buf[:end]
            return kind, body
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("mqttcount: the broker closed the connection")
        buf += chunk


def _parse(buf, at):
    """(first byte, body start, body end) of the packet at C{at}, or None."""
    if len(buf) - at < 2:
        return None
    length, multiplier, i = 0, 1, at + 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    if len(buf) - i < length:
        return None
    return buf[at], i, i + length


def main(port, topic):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # CONNECT: MQTT 3.1.1, clean session, no keepalive.
    sock.sendall(_packet(0x10, _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
                         + _string(f"grott-bench-count-{os.getpid()}")))
    buf = bytearray()
    kind, body = _read_packet(sock, buf)
    if kind != 0x20 or body[1] != 0:
        raise SystemExit(f"mqttcount: connection refused ({kind:#x} {body!r})")
    sock.sendall(_packet(0x82, struct.pack("!H", 1) + _string(topic) + bytes([1])))
    kind, body = _read_packet(sock, buf)
    if kind != 0x90 or body[2] not in (0, 1):
        raise SystemExit(f"mqttcount: subscription refused ({kind:#x} {body!r})")
    out = sys.stdout
    out.write(json.dumps({"event": "subscribed"}) + "\n")
    out.flush()
    messages = size = 0
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([sock, stdin], [], [])
        if stdin in ready:
            line = os.read(stdin, 1024)
            if not line:
                return 0
            out.write(json.dumps({"messages": messages, "bytes": size}) + "\n")
            out.flush()
        if sock not in ready:
            continue
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("mqttcount: the broker closed the connection")
        buf += chunk
        at, acks = 0, []
        while True:
            parsed = _parse(buf, at)
            if parsed is None:
                break
            first, start, end = parsed
            if first >> 4 == 3:
                messages += 1
                size += end - start
                if (first >> 1) & 3:
                    topic_length = (buf[start] << 8) | buf[start + 1]
                    pid = start + 2 + topic_length
                    acks.append(b"\x40\x02" + bytes(buf[pid:pid + 2]))
            at = end
        del buf[:at]
        if acks:
            sock.sendall(b"".join(acks))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
