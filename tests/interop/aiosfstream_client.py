"""aiosfstream-ng (a Salesforce Streaming API client for Python) against a bayeux server.

Usage: python aiosfstream_client.py INSTANCE_URL
The server serves Bayeux at INSTANCE_URL/cometd/45.0 (the path aiosfstream builds) with
/topic/** durable. aiosfstream runs unchanged; its extension point, the authenticator,
is subclassed to return the local instance URL and a token instead of asking Salesforce.
Prints one JSON line per step, like the other peer scripts.
"""
import asyncio
import json
import logging
import sys

from aiosfstream_ng import Client, ReplayOption
from aiosfstream_ng.auth import AuthenticatorBase

INSTANCE = sys.argv[1]
# aiocometd logs the cancellation of its own tasks on close as errors: not ours to judge.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)
PEER = "aiosfstream-ng"
CHANNEL = "/topic/orders"
WAIT = 10
failed = False


def report(step, ok, expected, got):
    global failed
    failed = failed or not ok
    print(json.dumps({"peer": PEER, "step": step, "ok": bool(ok), "expected": expected, "got": got}), flush=True)


class LocalAuthenticator(AuthenticatorBase):
    """Signs in to the local server: its URL and a token, no OAuth round trip."""

    async def _authenticate(self):
        return 200, {"access_token": "local-token", "token_type": "Bearer",
                     "instance_url": INSTANCE, "id": "local", "issued_at": "0", "signature": ""}


async def receive(client, n):
    """The next n messages on CHANNEL (others are skipped), each within WAIT seconds."""
    got = []
    while len(got) < n:
        message = await asyncio.wait_for(client.receive(), WAIT)
        if message.get("channel") == CHANNEL:
            got.append(message)
    return got


def orders(messages):
    return [m["data"]["order"] for m in messages]


def well_formed(messages):
    return all(isinstance(m["data"]["event"].get("replayId"), int)
               and isinstance(m["data"]["event"].get("createdDate"), str) for m in messages)


async def publish(numbers):
    """Publishes orders from a client of its own (new events only, no stored markers)."""
    async with Client(LocalAuthenticator(), replay=ReplayOption.NEW_EVENTS) as client:
        for n in numbers:
            await client.publish(CHANNEL, {"order": n})


async def main():
    markers = {}
    # Live: events arrive with their replay ids and creation dates; the client stores
    # a marker (replay id and date) for the channel.
    async with Client(LocalAuthenticator(), replay=markers) as client:
        await client.subscribe(CHANNEL)
        await publish([1, 2, 3])
        live = await receive(client, 3)
        report("live events in order", orders(live) == [1, 2, 3], [1, 2, 3], orders(live))
        report("each carries data.event.replayId and createdDate", well_formed(live), True,
               [m["data"]["event"] for m in live])
    marker = markers.get(CHANNEL)
    last = live[-1]["data"]["event"]["replayId"]
    report("the stored marker is the last event's", marker is not None and marker.replay_id == last,
           last, marker and marker.replay_id)

    # Away: two more orders; back with the same markers, exactly those two come.
    await publish([4, 5])
    async with Client(LocalAuthenticator(), replay=markers) as client:
        await client.subscribe(CHANNEL)
        missed = await receive(client, 2)
        report("replays what it missed after its marker", orders(missed) == [4, 5], [4, 5], orders(missed))
        await publish([6])
        after = await receive(client, 1)
        report("then live", orders(after) == [6], [6], orders(after))

    # All retained events.
    async with Client(LocalAuthenticator(), replay=ReplayOption.ALL_EVENTS) as client:
        await client.subscribe(CHANNEL)
        everything = await receive(client, 6)
        report("replays all retained events (-2)", orders(everything) == [1, 2, 3, 4, 5, 6],
               [1, 2, 3, 4, 5, 6], orders(everything))

    # A marker the server cannot replay after: refused (400), and the client's fallback
    # subscribes again from all retained events.
    stale = {CHANNEL: type(marker)(date=marker.date, replay_id=10**12)}
    async with Client(LocalAuthenticator(), replay=stale, replay_fallback=ReplayOption.ALL_EVENTS) as client:
        await client.subscribe(CHANNEL)
        fallback = await receive(client, 6)
        report("an id it cannot replay after falls back to all events", orders(fallback) == [1, 2, 3, 4, 5, 6],
               [1, 2, 3, 4, 5, 6], orders(fallback))

    print(json.dumps({"done": True, "failed": failed}), flush=True)


try:
    asyncio.run(asyncio.wait_for(main(), 60))
except Exception as e:  # noqa: BLE001 - every failure is a reported step
    report("ran to the end", False, "no exception", repr(e))
sys.exit(1 if failed else 0)
