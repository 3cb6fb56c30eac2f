"""Drives ledgerq's gRPC admin API with a client generated from its proto by
grpcio-tools (PyPI), a gRPC stack nobody here wrote.

Usage:
  admin_grpc.py scenario GRPC_ADDRESS   create, publish, pause, empty, stats,
                                        errors, reflection, health; leaves 5
                                        messages ("grpc-0".."grpc-4") in topic
                                        "from_grpc" for the caller to consume
  admin_grpc.py auth GRPC_ADDRESS TOKEN OPEN_READS   (OPEN_READS: 0 or 1)

Prints "ok" and exits 0 when every check holds; otherwise prints what failed
and exits 1. Used by tests/admin_grpc.rs.
"""

import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def generated_modules():
    """Compiles admin.proto into a temp dir and imports the stubs."""
    out = tempfile.mkdtemp(prefix="ledgerq-admin-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "ledgerq/admin/v1/admin.proto",
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    from ledgerq.admin.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402

    return admin_pb2, admin_pb2_grpc


pb, pb_grpc = generated_modules()


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def expect_error(call, code, prefix, what):
    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"{what}: code {error.code()} ({error.details()}), wanted {code}")
        check(
            error.details().startswith(prefix),
            f"{what}: message {error.details()!r} does not start with {prefix!r}",
        )
        return
    raise AssertionError(f"{what}: succeeded, wanted {code}")


def channel_stats(stub, topic, channel):
    stats = stub.GetStats(pb.GetStatsRequest(topic=topic))
    for t in stats.topics:
        for c in t.channels:
            if c.name == channel:
                return c
    raise AssertionError(f"{topic}/{channel} not in stats")


def scenario(address):
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.AdminStub(channel)
    ok = grpc.StatusCode

    health = stub.Health(pb.HealthRequest())
    check(health.healthy and health.status == "OK", f"health: {health}")

    stub.CreateTopic(pb.TopicRef(topic="orders"))
    stub.CreateTopic(pb.TopicRef(topic="orders"))  # idempotent
    check("orders" in stub.ListTopics(pb.ListTopicsRequest()).topics, "orders listed")
    stub.CreateChannel(pb.ChannelRef(topic="orders", channel="billing"))

    published = stub.Publish(pb.PublishRequest(topic="orders", messages=[b"m%d" % i for i in range(10)]))
    check(published.published == 10, f"published {published.published}")
    stub.Publish(pb.PublishRequest(topic="orders", messages=[b"later"], defer_ms=60000))
    topic = stub.GetTopic(pb.TopicRef(topic="orders"))
    check(topic.name == "orders" and topic.message_count == 11, f"topic: {topic}")
    check([c.name for c in topic.channels] == ["billing"], f"channels: {topic.channels}")
    billing = channel_stats(stub, "orders", "billing")
    check(billing.depth + billing.deferred_count == 11, f"billing holds 11: {billing}")
    check(billing.message_count == 11, f"billing received 11: {billing}")

    stub.PauseChannel(pb.ChannelRef(topic="orders", channel="billing"))
    check(channel_stats(stub, "orders", "billing").paused, "channel paused")
    stub.UnpauseChannel(pb.ChannelRef(topic="orders", channel="billing"))
    check(not channel_stats(stub, "orders", "billing").paused, "channel unpaused")
    stub.PauseTopic(pb.TopicRef(topic="orders"))
    check(stub.GetTopic(pb.TopicRef(topic="orders")).paused, "topic paused")
    stub.UnpauseTopic(pb.TopicRef(topic="orders"))
    check(not stub.GetTopic(pb.TopicRef(topic="orders")).paused, "topic unpaused")
    stub.EmptyChannel(pb.ChannelRef(topic="orders", channel="billing"))
    billing = channel_stats(stub, "orders", "billing")
    check(billing.depth == 0 and billing.deferred_count == 0, f"billing emptied: {billing}")
    stub.EmptyTopic(pb.TopicRef(topic="orders"))

    # Errors: nsqd's texts, proper codes.
    expect_error(lambda: stub.CreateTopic(pb.TopicRef(topic="bad name")), ok.INVALID_ARGUMENT, "INVALID_TOPIC", "bad topic")
    expect_error(lambda: stub.CreateTopic(pb.TopicRef(topic="")), ok.INVALID_ARGUMENT, "INVALID_TOPIC", "empty topic")
    expect_error(lambda: stub.CreateTopic(pb.TopicRef(topic="x" * 65)), ok.INVALID_ARGUMENT, "INVALID_TOPIC", "long topic")
    expect_error(
        lambda: stub.CreateChannel(pb.ChannelRef(topic="orders", channel="a/b")),
        ok.INVALID_ARGUMENT, "INVALID_CHANNEL", "bad channel",
    )
    expect_error(
        lambda: stub.CreateChannel(pb.ChannelRef(topic="missing", channel="c")),
        ok.NOT_FOUND, "TOPIC_NOT_FOUND", "channel of a missing topic",
    )
    for name, call in [
        ("get", stub.GetTopic), ("delete", stub.DeleteTopic), ("pause", stub.PauseTopic),
        ("unpause", stub.UnpauseTopic), ("empty", stub.EmptyTopic),
    ]:
        expect_error(lambda: call(pb.TopicRef(topic="missing")), ok.NOT_FOUND, "TOPIC_NOT_FOUND", f"{name} missing topic")
    for name, call in [
        ("delete", stub.DeleteChannel), ("pause", stub.PauseChannel),
        ("unpause", stub.UnpauseChannel), ("empty", stub.EmptyChannel),
    ]:
        expect_error(
            lambda: call(pb.ChannelRef(topic="orders", channel="nope")),
            ok.NOT_FOUND, "CHANNEL_NOT_FOUND", f"{name} missing channel",
        )
        expect_error(
            lambda: call(pb.ChannelRef(topic="missing", channel="nope")),
            ok.NOT_FOUND, "TOPIC_NOT_FOUND", f"{name} channel of a missing topic",
        )
    expect_error(lambda: stub.Publish(pb.PublishRequest(topic="orders")), ok.INVALID_ARGUMENT, "MSG_EMPTY", "no messages")
    expect_error(
        lambda: stub.Publish(pb.PublishRequest(topic="orders", messages=[b"a", b""])),
        ok.INVALID_ARGUMENT, "MSG_EMPTY", "an empty message",
    )
    expect_error(
        lambda: stub.Publish(pb.PublishRequest(topic="orders", messages=[b"x" * (1024 * 1024 + 1)])),
        ok.INVALID_ARGUMENT, "MSG_TOO_BIG", "a message over --max-msg-size",
    )
    expect_error(
        lambda: stub.Publish(pb.PublishRequest(topic="orders", messages=[b"x"], defer_ms=3600 * 1000 + 1)),
        ok.INVALID_ARGUMENT, "INVALID_DEFER", "a defer over --max-req-timeout",
    )
    big = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    expect_error(
        lambda: pb_grpc.AdminStub(big).Publish(
            pb.PublishRequest(topic="orders", messages=[b"y" * (1 << 20)] * 8)
        ),
        ok.RESOURCE_EXHAUSTED, "", "a request over --max-body-size",
    )
    expect_error(
        lambda: stub.AddMember(pb.AddMemberRequest(node_id=2, grpc_address="127.0.0.1:1")),
        ok.FAILED_PRECONDITION, "NOT_REPLICATED", "add a member to a single node",
    )
    expect_error(
        lambda: stub.RemoveMember(pb.RemoveMemberRequest(node_id=2)),
        ok.FAILED_PRECONDITION, "NOT_REPLICATED", "remove a member of a single node",
    )
    cluster = stub.ClusterStatus(pb.ClusterStatusRequest())
    check(cluster.mode == "single" and cluster.role == "leader", f"cluster: {cluster}")
    check(not cluster.HasField("leader_id"), "no leader id in single mode")

    # Raw bytes: a name that is not UTF-8, and an unknown field (ignored).
    raw = channel.unary_unary(
        "/ledgerq.admin.v1.Admin/CreateTopic",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    expect_error(lambda: raw(b"\x0a\x02\xff\xfe"), ok.INVALID_ARGUMENT, "", "a name that is not UTF-8")
    unknown_field = pb.TopicRef(topic="with_unknown").SerializeToString() + b"\xa0\x06\x01"
    raw(unknown_field)
    check("with_unknown" in stub.ListTopics(pb.ListTopicsRequest()).topics, "unknown field ignored")

    # Reflection and the standard health service.
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    check("ledgerq.admin.v1.Admin" in services, f"reflection lists {services}")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    serving = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="ledgerq.admin.v1.Admin")
    )
    check(serving.status == health_pb2.HealthCheckResponse.SERVING, f"health: {serving}")

    stub.DeleteChannel(pb.ChannelRef(topic="orders", channel="billing"))
    check(not stub.GetTopic(pb.TopicRef(topic="orders")).channels, "channel deleted")
    stub.DeleteTopic(pb.TopicRef(topic="orders"))
    check("orders" not in stub.ListTopics(pb.ListTopicsRequest()).topics, "topic deleted")

    # Left for the caller to consume over NSQ TCP.
    stub.Publish(pb.PublishRequest(topic="from_grpc", messages=[b"grpc-%d" % i for i in range(5)]))


def auth(address, token, open_reads):
    stub = pb_grpc.AdminStub(grpc.insecure_channel(address))
    ok = grpc.StatusCode
    good = [("authorization", f"Bearer {token}")]
    bad = [("authorization", f"Bearer {token}x")]
    expect_error(lambda: stub.CreateTopic(pb.TopicRef(topic="t")), ok.UNAUTHENTICATED, "UNAUTHENTICATED", "no token")
    expect_error(
        lambda: stub.CreateTopic(pb.TopicRef(topic="t"), metadata=bad),
        ok.UNAUTHENTICATED, "UNAUTHENTICATED", "wrong token",
    )
    stub.CreateTopic(pb.TopicRef(topic="t"), metadata=good)
    check(stub.ListTopics(pb.ListTopicsRequest(), metadata=good).topics == ["t"], "allowed with the token")
    if open_reads:
        check(stub.ListTopics(pb.ListTopicsRequest()).topics == ["t"], "open reads")
        stub.Health(pb.HealthRequest())
    else:
        expect_error(
            lambda: stub.ListTopics(pb.ListTopicsRequest()),
            ok.UNAUTHENTICATED, "UNAUTHENTICATED", "a read without the token",
        )
    expect_error(
        lambda: stub.DeleteTopic(pb.TopicRef(topic="t"), metadata=bad),
        ok.UNAUTHENTICATED, "UNAUTHENTICATED", "delete with a wrong token",
    )


def main():
    try:
        if sys.argv[1] == "scenario":
            scenario(sys.argv[2])
        elif sys.argv[1] == "auth":
            auth(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
        else:
            raise SystemExit(f"unknown mode {sys.argv[1]}")
    except AssertionError as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
