"""
A small Home Assistant websocket client, run by the Home Assistant venv's
Python (it has aiohttp), never imported by the tests themselves.

    python ha_client.py query URL TOKEN
        prints {"states", "entities", "devices"} as JSON and exits
    python ha_client.py watch URL TOKEN FILE
        appends every state change as a JSON line to FILE until killed
    python ha_client.py call URL TOKEN DOMAIN SERVICE JSON
        calls a service (as the UI does) with JSON as its data and exits
"""

import asyncio
import json
import sys

import aiohttp


async def _connect(session, url, token):
    ws = await session.ws_connect(url.rstrip("/") + "/api/websocket")
    hello = await ws.receive_json()
    assert hello["type"] == "auth_required", hello
    await ws.send_json({"type": "auth", "access_token": token})
    answer = await ws.receive_json()
    if answer["type"] != "auth_ok":
        raise SystemExit(f"auth failed: {answer}")
    return ws


async def _call(ws, ident, command):
    await ws.send_json(dict(command, id=ident))
    while True:
        message = await ws.receive_json()
        if message.get("id") == ident and message.get("type") == "result":
            if not message.get("success"):
                raise SystemExit(f"{command['type']} failed: {message}")
            return message["result"]


async def query(url, token):
    async with aiohttp.ClientSession() as session:
        ws = await _connect(session, url, token)
        result = {
            "states": await _call(ws, 1, {"type": "get_states"}),
            "entities": await _call(ws, 2, {"type": "config/entity_registry/list"}),
            "devices": await _call(ws, 3, {"type": "config/device_registry/list"}),
        }
        await ws.close()
    json.dump(result, sys.stdout)


async def call(url, token, domain, service, data):
    async with aiohttp.ClientSession() as session:
        ws = await _connect(session, url, token)
        await _call(ws, 1, {"type": "call_service", "domain": domain, "service": service,
                            "service_data": json.loads(data)})
        await ws.close()


async def watch(url, token, out):
    async with aiohttp.ClientSession() as session:
        ws = await _connect(session, url, token)
        await _call(ws, 1, {"type": "subscribe_events", "event_type": "state_changed"})
        out.write(json.dumps({"watching": True}) + "\n")
        out.flush()
        while True:
            message = await ws.receive_json()
            if message.get("type") != "event":
                continue
            new = message["event"]["data"].get("new_state") or {}
            out.write(json.dumps({"entity_id": message["event"]["data"]["entity_id"],
                                  "state": new.get("state")}) + "\n")
            out.flush()


if __name__ == "__main__":
    mode, url, token = sys.argv[1:4]
    if mode == "query":
        asyncio.run(query(url, token))
    elif mode == "call":
        asyncio.run(call(url, token, *sys.argv[4:7]))
    else:
        with open(sys.argv[4], "a", encoding="utf-8") as changes:
            asyncio.run(watch(url, token, changes))
