"""aiocometd-ng (Python asyncio CometD client) against a bayeux server.

Usage: python aiocometd_client.py BAYEUX_URL BASE_URL
Prints one JSON line per step, like the Node peer scripts.
"""
import asyncio
import base64
import json
import sys
import urllib.request

from aiocometd_ng import Client, ConnectionType, Extension

URL, BASE = sys.argv[1], sys.argv[2]
PEER = "aiocometd-ng (long-polling)"
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
    lp = [ConnectionType.LONG_POLLING]
    client_ids = []
    async with Client(URL, lp) as a, Client(URL, lp) as b:
        ids = [client_id(a), client_id(b)]
        report("handshake", all(ids), "clientIds", ids)
        client_ids += ids
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

        async with Client(URL, lp, extensions=[BasicAuth("py-agent")]) as agent:
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
    report("disconnect", True, "closed", "closed (checked on the server side)")
    print(json.dumps({"clientIds": client_ids}))
    print(json.dumps({"done": True, "failed": failed}), flush=True)


asyncio.run(asyncio.wait_for(main(), 30))
