"""aiocometd-ng (Python asyncio CometD client) against a bayeux server.

Usage: python aiocometd_client.py BAYEUX_URL BASE_URL websocket|long-polling
Prints one JSON line per step, like the Node peer scripts. aiocometd handshakes over
long-polling, then opens the transport it negotiated: with `websocket`, its WebSocket
transport (which our server offers); with `long-polling`, long-polling only.
"""
import asyncio
import base64
import json
import sys
import urllib.request

from aiocometd_ng import Client, ConnectionType, Extension

URL, BASE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
CONNECTION_TYPE = ConnectionType(MODE)
PEER = f"aiocometd-ng ({MODE})"
failed = False


def report(step, ok, expected, got):
    global failed
    failed = failed or not ok
    print(json.dumps({"peer": PEER, "step": step, "ok": bool(ok), "expected": expected, "got": got}), flush=True)


def expect_equal(step, expected, got):
    report(step, expected == got, expected, got)


class BasicAuth(Extension):
    """Adds HTTP Basic credentials to every request."""

    def __init__(self, user):
        self.value = "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()

    async def outgoing(self, payload, headers):
        headers["Authorization"] = self.value

    async def incoming(self, payload, headers=None):
        pass


def client_id(client):
    """The session's clientId (aiocometd keeps it on its transport)."""
    return getattr(client._transport, "client_id", None)


def transport(client):
    """The connection type the client uses, and whether its transport has a socket open
    (WebSocket) or not (long-polling)."""
    factory = getattr(client._transport, "_socket_factory", None)
    socket = factory and factory._socket
    return [client.connection_type.value, bool(socket is not None and not socket.closed)]


async def next_message(client, timeout=5.0):
    try:
        m = await asyncio.wait_for(client.receive(), timeout)
        return {"channel": m["channel"], "data": m.get("data")}
    except asyncio.TimeoutError:
        return "nothing (timeout)"


def assign(user, op, uri):
    req = urllib.request.Request(
        f"{BASE}/api/v2/users/{user}/workbins/wb1",
        data=json.dumps({"operationName": op, "uri": uri}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as res:
        return res.status, json.loads(res.read())


async def main():
    # Over WebSocket, aiocometd completes a pending request with any incoming message that
    # carries the request's id, event messages included; ids count from 0 per client and
    # broadcasts keep their publisher's id, so a delivery can complete another client's
    # held /meta/connect. The flow below never lets those ids meet within a connect's
    # hold (the whole run takes well under the 5 s `timeout`).
    types = [CONNECTION_TYPE]
    in_use = [MODE, CONNECTION_TYPE == ConnectionType.WEBSOCKET]
    client_ids = []
    async with Client(URL, types) as a, Client(URL, types) as b:
        ids = [client_id(a), client_id(b)]
        report("handshake", all(ids), "clientIds", ids)
        client_ids += ids
        expect_equal("transport", {"a": in_use, "b": in_use}, {"a": transport(a), "b": transport(b)})
        await a.subscribe("/chat/room")
        report("subscribe", True, "subscribed", "subscribed")
        reply = await b.publish("/chat/room", {"text": "hello"})
        report("publish reply", reply.get("successful") is True, "successful", reply)
        expect_equal("receive", {"channel": "/chat/room", "data": {"text": "hello"}}, await next_message(a))

        await a.subscribe("/wild/*")
        await a.subscribe("/wild/deep/**")
        await b.publish("/wild/one", 1)
        expect_equal("wildcard *", {"channel": "/wild/one", "data": 1}, await next_message(a))
        await b.publish("/wild/deep/x/y", 2)
        expect_equal("wildcard **", {"channel": "/wild/deep/x/y", "data": 2}, await next_message(a))

        await a.subscribe("/seq")
        for n in (1, 2, 3):
            await b.publish("/seq", n)
        got = [(await next_message(a))["data"] for _ in range(3)]
        expect_equal("messages in order", [1, 2, 3], got)

        await a.unsubscribe("/seq")
        await a.subscribe("/sentinel/x")
        await b.publish("/seq", "after")
        await b.publish("/sentinel/x", "sentinel")
        expect_equal("unsubscribe stops delivery", {"channel": "/sentinel/x", "data": "sentinel"}, await next_message(a))

        # The credentials go in an HTTP header, on the socket's upgrade request too.
        async with Client(URL, types, extensions=[BasicAuth("py-agent")]) as agent:
            client_ids.append(client_id(agent))
            await agent.subscribe("/v2/me/*")
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, assign, "py-agent", "AddWorkitem", ".../W0RK1T3M")
            report("workbin POST", status == 200 and body.get("statusCode") == 0, "200 statusCode 0", body)
            n1, n2 = await next_message(agent), await next_message(agent)
            expect_equal(
                "workbin notifications",
                [["/v2/me/workbins", "WorkbinStateChangeMessage", body.get("referenceId")],
                 ["/v2/me/workitems", "WorkitemStateChangeMessage", body.get("referenceId")]],
                [[n["channel"], n["data"]["messageType"], n["data"]["referenceId"]] for n in (n1, n2)
                 if isinstance(n, dict)],
            )
            expect_equal(
                "transport at the end",
                {"a": in_use, "b": in_use, "agent": in_use},
                {"a": transport(a), "b": transport(b), "agent": transport(agent)},
            )
    report("disconnect", True, "closed", "closed (checked on the server side)")
    print(json.dumps({"clientIds": client_ids}))
    print(json.dumps({"done": True, "failed": failed}), flush=True)


asyncio.run(asyncio.wait_for(main(), 30))
