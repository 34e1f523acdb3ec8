"""A receive-only Teleconsult participant on aiortc, an independent WebRTC
stack in Python, written from docs/protocol.md alone.

It joins with a join token, sends a publish offer whose sections are all
recvonly (a participant with neither camera nor microphone), answers every
subscribe offer without bundling (bundle policy max-compat: one transport
per media section, so it reads each section's own candidates), and after a
while prints, as JSON, the RTP packets received on each remote track.

Why max-compat and not aiortc's default (balanced): aiortc 1.16's balanced
policy gives the second video section of a subscribe offer a transport of
its own that it never starts, so a fourth track never arrives. That is an
aiortc limitation; max-bundle and max-compat both receive every track.

    python receive_only.py --ws ws://127.0.0.1:8080/ws --token JWT --seconds 6
"""

import argparse
import asyncio
import json
import sys

import websockets

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

CONFIG = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_COMPAT)


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.waiting = {}
        self.publish = RTCPeerConnection()
        self.subscribe = None
        self.errors = []

    async def request(self, message):
        self.next_id += 1
        message["id"] = f"a{self.next_id}"
        future = asyncio.get_running_loop().create_future()
        self.waiting[message["id"]] = future
        await self.ws.send(json.dumps(message))
        return await asyncio.wait_for(future, 10)

    async def read(self):
        async for text in self.ws:
            message = json.loads(text)
            future = self.waiting.pop(message.get("id"), None) if message.get("id") else None
            if future is not None:
                future.set_result(message)
            elif message["type"] == "subscribe_offer":
                await self.answer(message["sdp"])
            elif message["type"] == "error":
                self.errors.append(message["code"])

    async def answer(self, sdp):
        if self.subscribe is None:
            self.subscribe = RTCPeerConnection(CONFIG)
        await self.subscribe.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.subscribe.setLocalDescription(await self.subscribe.createAnswer())
        reply = await self.request({"type": "subscribe_answer", "sdp": self.subscribe.localDescription.sdp})
        if reply["type"] == "error":
            self.errors.append(reply["code"])


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    async with websockets.connect(args.ws) as ws:
        client = Client(ws)
        reader = asyncio.create_task(client.read())
        welcome = await client.request({"type": "hello", "protocol": 1})
        assert welcome["type"] == "welcome", welcome
        joined = await client.request({"type": "join", "token": args.token})
        assert joined["type"] == "joined", joined
        # Neither camera nor microphone: recvonly sections only.
        client.publish.addTransceiver("audio", direction="recvonly")
        client.publish.addTransceiver("video", direction="recvonly")
        await client.publish.setLocalDescription(await client.publish.createOffer())
        answer = await client.request({"type": "publish_offer", "sdp": client.publish.localDescription.sdp})
        assert answer["type"] == "publish_answer", answer
        await client.publish.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.sleep(args.seconds)
        tracks = []
        if client.subscribe is not None:
            for transceiver in client.subscribe.getTransceivers():
                stats = await transceiver.receiver.getStats()
                packets = sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")
                tracks.append({"mid": transceiver.mid, "kind": transceiver.kind, "packets": packets})
        print(json.dumps({"tracks": tracks, "errors": client.errors}))
        reader.cancel()
        await client.publish.close()
        if client.subscribe is not None:
            await client.subscribe.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # reported to the calling test, which fails on it
        print(json.dumps({"failure": repr(e)}))
        sys.exit(1)
