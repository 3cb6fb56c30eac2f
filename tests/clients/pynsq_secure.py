"""pynsq over TLS and/or compression: publishes, then consumes.

Usage: pynsq_secure.py NSQD_TCP TOPIC COUNT TIMEOUT_SECS OPTIONS_JSON

OPTIONS_JSON holds pynsq's connection options, e.g.
{"tls_v1": true, "tls_options": {"ca_certs": "/tmp/ca.pem"}, "snappy": true}.
Publishes COUNT messages "pynsq-<i>" with an nsq.Writer (each answered
OK), then reads TOPIC/"secure" with an nsq.Reader until COUNT distinct
bodies have arrived, FINing each. Prints a JSON object
{"published": n, "received": [...sorted bodies...]} and exits 0, or 1
after TIMEOUT_SECS. Used by tests/tls_compression.rs.
"""

import json
import sys

import nsq
import tornado.ioloop


def main():
    address, topic = sys.argv[1], sys.argv[2]
    count, timeout_secs = int(sys.argv[3]), float(sys.argv[4])
    options = json.loads(sys.argv[5])
    loop = tornado.ioloop.IOLoop.current()
    published = {"ok": 0, "errors": []}
    received = set()
    outcome = {"code": None}

    def finish(code):
        if outcome["code"] is None:
            outcome["code"] = code
            loop.call_later(0.2, loop.stop)

    def handler(message):
        received.add(message.body.decode())
        if len(received) >= count:
            finish(0)
        return True

    def start_reader():
        nsq.Reader(
            message_handler=handler,
            nsqd_tcp_addresses=[address],
            topic=topic,
            channel="secure",
            max_in_flight=50,
            **options,
        )

    def on_published(conn, data):
        if isinstance(data, Exception):
            published["errors"].append(str(data))
            finish(1)
            return
        published["ok"] += 1
        if published["ok"] == count:
            start_reader()

    writer = nsq.Writer([address], **options)

    def publish_all():
        if not writer.conns:
            loop.call_later(0.05, publish_all)
            return
        for i in range(count):
            writer.pub(topic, ("pynsq-%d" % i).encode(), callback=on_published)

    loop.call_later(0.05, publish_all)
    loop.call_later(timeout_secs, lambda: finish(1))
    loop.start()
    result = {
        "published": published["ok"],
        "errors": published["errors"],
        "received": sorted(received),
    }
    print(json.dumps(result))
    sys.exit(outcome["code"])


if __name__ == "__main__":
    main()
