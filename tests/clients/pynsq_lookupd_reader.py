"""A pynsq Reader that finds its nsqd nodes through lookupd only.

Usage: pynsq_lookupd_reader.py LOOKUPD_HTTP TOPIC CHANNEL COUNT TIMEOUT_SECS

Consumes TOPIC/CHANNEL from every node that LOOKUPD_HTTP's /lookup lists,
FINs every message, and once COUNT distinct bodies have arrived prints them
as a JSON array on stdout and exits 0. After TIMEOUT_SECS it prints what it
has and exits 1. Used by tests/lookupd_clients.rs.
"""

import json
import sys

import nsq
import tornado.ioloop


def main():
    lookupd, topic, channel = sys.argv[1], sys.argv[2], sys.argv[3]
    count, timeout_secs = int(sys.argv[4]), float(sys.argv[5])
    loop = tornado.ioloop.IOLoop.current()
    seen = set()
    outcome = {"code": None}

    def finish(code):
        if outcome["code"] is None:
            outcome["code"] = code
            # Let the FIN of the last message reach the server first.
            loop.call_later(0.2, loop.stop)

    def handler(message):
        seen.add(message.body.decode())
        if len(seen) >= count:
            finish(0)
        return True

    nsq.Reader(
        message_handler=handler,
        lookupd_http_addresses=[lookupd],
        lookupd_poll_interval=1,
        topic=topic,
        channel=channel,
        max_in_flight=20,
    )
    loop.call_later(timeout_secs, lambda: finish(1))
    loop.start()
    print(json.dumps(sorted(seen)))
    sys.exit(outcome["code"])


if __name__ == "__main__":
    main()
