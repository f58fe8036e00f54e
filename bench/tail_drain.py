"""A child process holding N operator StreamEvents tails open and draining them (the tails figure's client).

``python -m bench.tail_drain <network root> <tails> [idle]``: prints ``open`` once every tail has caught up with the
trail (no event for 0.5 s), then, at SIGTERM, one JSON line (``events`` received, ``refused``: status -> tails
refused) and exits.
Kept out of the writers' process so the tails' client cost is not charged to the writers (one GIL each).
"""

from __future__ import annotations

import collections
import json
import pathlib
import signal
import sys
import threading
import time

import grpc

from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
from carechain.client.sdk import CareChainClient
from carechain.core.layout import NetworkLayout


def main() -> None:
    root, tails = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    idle = len(sys.argv) > 3 and sys.argv[3] == "idle"  # tails whose filter no event passes (alerts only)
    client = CareChainClient(Endpoints.load(root / ENDPOINTS_FILE), NetworkLayout(root).operator_signer())
    lock = threading.Lock()
    received, refused, last = [0], collections.Counter(), [time.monotonic()]

    def drain(stream: object) -> None:
        try:
            for _event in stream:  # type: ignore[attr-defined]
                with lock:
                    received[0] += 1
                    last[0] = time.monotonic()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # cancelled is how the drain ends a tail
                with lock:
                    refused[f"{exc.code().name}: {exc.details()}"] += 1

    after = 0
    if idle:  # idle tails start at the trail's end: their replay is not what the figure measures
        for stored in client.stream_audit_events(replay_only=True):
            after = stored.sequence
    # The SDK's tail (what `carechain audit tail` runs): StreamEventBatches, handed out event by event.
    streams = [client.stream_audit_events(after, alerts_only=idle) for _ in range(tails)]
    for stream in streams:
        threading.Thread(target=drain, args=(stream,), daemon=True).start()
    while time.monotonic() - last[0] < 0.5:
        time.sleep(0.1)
    print("open", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    with lock:
        print(json.dumps({"events": received[0], "refused": dict(refused)}), flush=True)
    client.close()


if __name__ == "__main__":
    main()
