//! The admin endpoints against the real binary: `/topic/pause|unpause|delete`
//! and `/channel/pause|unpause|delete` — nsqd's errors, what pausing and
//! deleting do to delivery, and that both survive a SIGKILL.
//!
//! The server and HTTP client are `common::http`'s; TCP checks use
//! `common::RawClient`.

mod common;

use common::http::*;

use common::RawClient;

#[test]
fn topic_endpoint_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    for path in ["/topic/pause", "/topic/unpause", "/topic/delete"] {
        server
            .post(path, b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?channel=c"), b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=nope"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        // nsqd does not check the name here: an invalid one is not found.
        server
            .post(&format!("{path}?topic=a*b"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .post(&format!("{path}?topic="), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .get(&format!("{path}?topic=nope"))
            .assert_error(405, "METHOD_NOT_ALLOWED");
        server
            .request("PUT", &format!("{path}?topic=nope"), b"")
            .assert_error(405, "METHOD_NOT_ALLOWED");
        server
            .post(&format!("{path}?topic=%zz"), b"")
            .assert_error(400, "INVALID_REQUEST");
    }
}

#[test]
fn channel_endpoint_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    for path in ["/channel/pause", "/channel/unpause", "/channel/delete"] {
        server
            .post(&format!("{path}?channel=c"), b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=a*b&channel=c"), b"")
            .assert_error(400, "INVALID_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=t"), b"")
            .assert_error(400, "MISSING_ARG_CHANNEL");
        server
            .post(&format!("{path}?topic=t&channel=a*b"), b"")
            .assert_error(400, "INVALID_ARG_CHANNEL");
        server
            .post(&format!("{path}?topic=nope&channel=c"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .post(&format!("{path}?topic=t&channel=c"), b"")
            .assert_error(404, "CHANNEL_NOT_FOUND");
        server
            .get(&format!("{path}?topic=t&channel=c"))
            .assert_error(405, "METHOD_NOT_ALLOWED");
    }
}

#[test]
fn topic_pause_holds_messages_until_unpause() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "orders", "audit");
    server.post("/pub?topic=orders", b"before").assert_ok();
    assert_eq!(body_text(&mut consumer), "before");

    server.post("/topic/pause?topic=orders", b"").assert_empty();
    server.post("/topic/pause?topic=orders", b"").assert_empty();
    server.post("/pub?topic=orders", b"one").assert_ok();
    server.post("/mpub?topic=orders", b"two\nthree").assert_ok();
    assert_quiet(&mut consumer);

    // A channel created while the topic is paused sees none of the held
    // messages either, until the topic hands them over.
    server
        .post("/channel/create?topic=orders&channel=late", b"")
        .assert_empty();
    let mut late = subscriber(&server, "orders", "late");
    assert_quiet(&mut late);

    server
        .post("/topic/unpause?topic=orders", b"")
        .assert_empty();
    for expected in ["one", "two", "three"] {
        assert_eq!(body_text(&mut consumer), expected);
        assert_eq!(body_text(&mut late), expected);
    }
    server.post("/pub?topic=orders", b"after").assert_ok();
    assert_eq!(body_text(&mut consumer), "after");
}

#[test]
fn channel_pause_stops_delivery_but_not_fin() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut paused = subscriber(&server, "t", "paused");
    let mut other = subscriber(&server, "t", "other");
    server.post("/pub?topic=t", b"one").assert_ok();
    let in_flight = paused.read_message();
    assert_eq!(body_text(&mut other), "one");

    server
        .post("/channel/pause?topic=t&channel=paused", b"")
        .assert_empty();
    server.post("/pub?topic=t", b"two").assert_ok();
    assert_eq!(body_text(&mut other), "two");
    // The in-flight message can still be finished (no error before the
    // barrier's own), and nothing new arrives.
    paused.finish(&in_flight);
    assert_quiet(&mut paused);

    server
        .post("/channel/unpause?topic=t&channel=paused", b"")
        .assert_empty();
    assert_eq!(body_text(&mut paused), "two");
}

#[test]
fn pause_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    for (topic, channel) in [("held", "c"), ("quiet", "c")] {
        server
            .post(&format!("/topic/create?topic={topic}"), b"")
            .assert_empty();
        server
            .post(
                &format!("/channel/create?topic={topic}&channel={channel}"),
                b"",
            )
            .assert_empty();
    }
    server.post("/topic/pause?topic=held", b"").assert_empty();
    server
        .post("/channel/pause?topic=quiet&channel=c", b"")
        .assert_empty();
    server.post("/pub?topic=held", b"h").assert_ok();
    server.post("/pub?topic=quiet", b"q").assert_ok();
    server.kill();

    let server = HttpServer::start(dir.path(), &[]);
    let mut held = subscriber(&server, "held", "c");
    let mut quiet = subscriber(&server, "quiet", "c");
    assert_quiet(&mut held);
    assert_quiet(&mut quiet);
    server.post("/topic/unpause?topic=held", b"").assert_empty();
    server
        .post("/channel/unpause?topic=quiet&channel=c", b"")
        .assert_empty();
    assert_eq!(body_text(&mut held), "h");
    assert_eq!(body_text(&mut quiet), "q");
}

#[test]
fn channel_delete_disconnects_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut doomed = subscriber(&server, "t", "doomed");
    let mut kept = subscriber(&server, "t", "kept");
    server.post("/pub?topic=t", b"one").assert_ok();
    let _in_flight = doomed.read_message();
    assert_eq!(body_text(&mut kept), "one");

    server
        .post("/channel/delete?topic=t&channel=doomed", b"")
        .assert_empty();
    doomed.expect_closed();
    server
        .post("/channel/delete?topic=t&channel=doomed", b"")
        .assert_error(404, "CHANNEL_NOT_FOUND");
    server
        .post("/channel/pause?topic=t&channel=doomed", b"")
        .assert_error(404, "CHANNEL_NOT_FOUND");

    // The other channel is untouched; a new channel of the same name starts
    // empty, at the head of the topic.
    server.post("/pub?topic=t", b"two").assert_ok();
    assert_eq!(body_text(&mut kept), "two");
    let mut again = subscriber(&server, "t", "doomed");
    assert_quiet(&mut again);
    server.post("/pub?topic=t", b"three").assert_ok();
    assert_eq!(body_text(&mut again), "three");
    assert_eq!(body_text(&mut kept), "three");

    // The deletion is durable: after a SIGKILL, the old channel's unfinished
    // "one" does not come back.
    drop((again, kept));
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut after = subscriber(&server, "t", "doomed");
    assert_eq!(body_text(&mut after), "three");
    assert_quiet(&mut after);
}

#[test]
fn topic_delete_disconnects_and_drops_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "gone", "c");
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("gone", b"one");
    let _in_flight = consumer.read_message();
    server.post("/topic/pause?topic=gone", b"").assert_empty();
    server.post("/mpub?topic=gone", b"two\nthree").assert_ok();

    server.post("/topic/delete?topic=gone", b"").assert_empty();
    consumer.expect_closed();
    server
        .post("/topic/delete?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .post("/topic/unpause?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .post("/channel/create?topic=gone&channel=c", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");

    // Publishing again (the producer's connection is unaffected) creates a
    // new, empty, unpaused topic.
    producer.publish("gone", b"four");
    let mut fresh = subscriber(&server, "gone", "c");
    assert_eq!(body_text(&mut fresh), "four");
    assert_quiet(&mut fresh);

    // Deleted for good: after a SIGKILL and a second delete, nothing is left.
    drop(fresh);
    server.kill();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut after = subscriber(&server, "gone", "c");
    assert_eq!(body_text(&mut after), "four");
    drop(after);
    server.post("/topic/delete?topic=gone", b"").assert_empty();
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    server
        .post("/topic/pause?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
}

#[test]
fn ephemeral_topics_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let topic = "e%23ephemeral";
    let mut consumer = subscriber(&server, "e#ephemeral", "c");
    server
        .post(&format!("/topic/pause?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"one")
        .assert_ok();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/topic/unpause?topic={topic}"), b"")
        .assert_empty();
    assert_eq!(body_text(&mut consumer), "one");

    server
        .post(&format!("/channel/pause?topic={topic}&channel=c"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"two")
        .assert_ok();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/channel/unpause?topic={topic}&channel=c"), b"")
        .assert_empty();
    assert_eq!(body_text(&mut consumer), "two");

    // The last channel of an ephemeral topic takes the topic with it.
    server
        .post(&format!("/channel/delete?topic={topic}&channel=c"), b"")
        .assert_empty();
    consumer.expect_closed();
    server
        .post(&format!("/topic/delete?topic={topic}"), b"")
        .assert_error(404, "TOPIC_NOT_FOUND");

    // An ephemeral channel of a durable topic.
    let mut ephemeral = subscriber(&server, "d", "c#ephemeral");
    server
        .post("/channel/delete?topic=d&channel=c%23ephemeral", b"")
        .assert_empty();
    ephemeral.expect_closed();
    server.post("/topic/delete?topic=d", b"").assert_empty();
    server
        .post("/topic/delete?topic=d", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
}

/// A request with an `Authorization` header (on a new connection).
fn with_token(server: &HttpServer, method: &str, target: &str, token: &str) -> Response {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    common::http::exchange(server.http_address, raw.as_bytes())
}

#[test]
fn an_admin_token_guards_the_admin_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("http.token");
    std::fs::write(&token_path, "adm1n\n").unwrap();
    let flag = format!("--http-admin-token-file={}", token_path.display());
    let server = HttpServer::start(&dir.path().join("data"), &[&flag]);
    let writes = [
        ("POST", "/topic/create?topic=t"),
        ("POST", "/channel/create?topic=t&channel=c"),
        ("POST", "/topic/pause?topic=t"),
        ("POST", "/topic/unpause?topic=t"),
        ("POST", "/channel/pause?topic=t&channel=c"),
        ("POST", "/channel/unpause?topic=t&channel=c"),
        ("POST", "/channel/empty?topic=t&channel=c"),
        ("POST", "/topic/empty?topic=t"),
        ("PUT", "/config/log_level"),
        ("POST", "/cluster/add?node_id=4&grpc_address=127.0.0.1:1"),
        ("POST", "/cluster/remove?node_id=4"),
        ("POST", "/channel/delete?topic=t&channel=c"),
        ("POST", "/topic/delete?topic=t"),
    ];
    for (method, target) in writes {
        let refused = server.request(method, target, b"");
        refused.assert_error(401, "UNAUTHORIZED");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        with_token(&server, method, target, "adm1").assert_error(401, "UNAUTHORIZED");
    }
    // Nothing was changed by a refused request.
    assert!(!server.get("/stats?format=json").body.contains("\"t\""));
    // With the token each write takes effect (the cluster ones answer as on
    // any single node).
    for (method, target) in writes {
        let answer = with_token(&server, method, target, "adm1n");
        match target {
            t if t.starts_with("/cluster/") => answer.assert_error(400, "NOT_REPLICATED"),
            // Past the guard: nsqd's answer to an empty value.
            "/config/log_level" => answer.assert_error(413, "INVALID_VALUE"),
            _ => assert_eq!(answer.status, 200, "{method} {target}: {answer:?}"),
        }
    }
    // Reads and publishing stay open, as in nsqd.
    assert_eq!(server.get("/config/log_level").status, 200);
    assert_eq!(server.get("/stats").status, 200);
    assert_eq!(server.get("/ping").status, 200);
    server.post("/pub?topic=open", b"m").assert_ok();
}
