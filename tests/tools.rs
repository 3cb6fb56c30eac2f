//! NSQ's command-line tools (`ledgerq pub`, `tail`, `to-file`, `stat`) as
//! real processes against a real `ledgerq serve` (and `ledgerq lookupd`) on
//! loopback: 100k lines published and written to files exactly once across
//! SIGKILLs of `to-file` (plain and gzip), tail, discovery through lookupd,
//! stat's rows, and one-line errors with a non-zero exit.

mod common;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::http::create_topic_and_channel;
use common::lookupd::Lookupd;
use common::{wait_until, RawClient, Server, DEADLINE};

fn ledgerq(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerq"));
    command.args(args);
    command
}

/// Runs a tool to its end (bounded), feeding it `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = ledgerq(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerq");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&stdin));
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(DEADLINE).is_err() {
            // Still running at the deadline (not yet reaped, so still ours).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().expect("wait");
    let _ = done.send(());
    let _ = feeder.join();
    let _ = watchdog.join();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The tool succeeded; its stdout.
fn ok(args: &[&str], stdin: &[u8]) -> String {
    let output = run(args, stdin);
    assert!(
        output.status.success(),
        "{args:?}: {:?}\n{}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The tool failed with exit 1 and exactly one stderr line holding `expected`.
fn fails(args: &[&str], stdin: &[u8], expected: &str) {
    let output = run(args, stdin);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.contains(expected), "{args:?}: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// (depth, in flight) of a channel, from `/stats`.
fn channel_depth(server: &Server, topic: &str, channel: &str) -> (u64, u64) {
    let stats = server.get(&format!(
        "/stats?format=json&topic={topic}&channel={channel}"
    ));
    let json: serde_json::Value = serde_json::from_str(&stats.body).expect("JSON");
    let channel = &json["topics"][0]["channels"][0];
    (
        channel["depth"].as_u64().expect("depth"),
        channel["in_flight_count"].as_u64().expect("in flight"),
    )
}

fn lines_file(dir: &Path, count: usize) -> (PathBuf, Vec<String>) {
    let lines: Vec<String> = (0..count).map(|n| format!("line-{n:06}")).collect();
    let path = dir.join("lines.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines)
}

/// Every line of every output file (journals left out; gzip decoded), sorted.
fn output_lines(dir: &Path) -> Vec<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let mut file = File::open(&path).unwrap();
        if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(file)
                .read_to_string(&mut text)
                .unwrap();
        } else {
            file.read_to_string(&mut text).unwrap();
        }
    }
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// A running `ledgerq to-file` on `channel`, its stderr (info level) kept
/// in `<out>.stderr`.
fn start_to_file(server: &Server, out: &Path, channel: &str, extra: &[&str]) -> Child {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(out.with_extension("stderr"))
        .unwrap();
    let nsqd = format!("--nsqd-tcp-address={}", server.tcp_address);
    let dir = format!("--output-dir={}", out.display());
    let channel = format!("--channel={channel}");
    let mut args = vec!["to-file", "--topic=archive", &channel, &nsqd, &dir];
    args.extend_from_slice(extra);
    ledgerq(&args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn to-file")
}

/// Waits for `to-file` to drain `channel`, then stops it with SIGTERM.
fn drain_and_stop(server: &Server, mut to_file: Child, out: &Path, channel: &str) {
    wait_until("the channel drained", || {
        channel_depth(server, "archive", channel) == (0, 0)
    });
    unsafe { libc::kill(to_file.id() as i32, libc::SIGTERM) };
    let status = to_file.wait().unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("stderr")).unwrap_or_default();
    assert!(status.success(), "to-file: {status:?}\n{stderr}");
}

#[derive(Clone, Copy)]
enum Kill {
    ToFile,
    Server,
}

/// Publishes `count` lines with `pub`, consumes them with `to-file`,
/// SIGKILLing it or the server at the given channel depths, and checks the
/// output holds each line exactly once. Then delivers them all again (a
/// second channel has the same messages, IDs and timestamps; it is given a
/// copy of the journal) and checks that nothing is written twice.
fn publish_and_archive(count: usize, kills: &[(Kill, u64)], to_file_flags: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[]);
    create_topic_and_channel(server.http_address, "archive", "files");
    server
        .post("/channel/create?topic=archive&channel=again", b"")
        .assert_empty();
    let work = tempfile::tempdir().unwrap();
    let (input, lines) = lines_file(work.path(), count);
    let nsqd = format!("--nsqd-tcp-address={}", server.tcp_address);
    let file = format!("--file={}", input.display());
    let started = Instant::now();
    ok(&["pub", &nsqd, "--topic=archive", &file], b"");
    let published = started.elapsed();
    // Every OK means fsynced and handed to the channels.
    assert_eq!(
        channel_depth(&server, "archive", "files"),
        (count as u64, 0)
    );

    let out = work.path().join("out");
    let mut to_file = start_to_file(&server, &out, "files", to_file_flags);
    for &(kill, depth) in kills {
        wait_until("to-file progress", || {
            channel_depth(&server, "archive", "files").0 <= depth
        });
        match kill {
            Kill::ToFile => {
                to_file.kill().unwrap();
                to_file.wait().unwrap();
            }
            Kill::Server => {
                server.kill();
                wait_until("to-file exits", || to_file.try_wait().unwrap().is_some());
                assert_eq!(to_file.wait().unwrap().code(), Some(1), "lost its server");
                server.restart();
            }
        }
        to_file = start_to_file(&server, &out, "files", to_file_flags);
    }
    drain_and_stop(&server, to_file, &out, "files");
    let written = output_lines(&out);
    assert_eq!(written.len(), lines.len(), "lines in the output");
    assert!(written == lines, "each line exactly once");
    let archived = started.elapsed();

    std::fs::copy(
        out.join(".archive.files.to-file-journal"),
        out.join(".archive.again.to-file-journal"),
    )
    .unwrap();
    let to_file = start_to_file(&server, &out, "again", to_file_flags);
    drain_and_stop(&server, to_file, &out, "again");
    assert!(output_lines(&out) == lines, "nothing written twice");
    let log = std::fs::read_to_string(out.with_extension("stderr")).unwrap();
    assert!(log.contains("already written"), "{log}");
    eprintln!(
        "{count} lines: pub {published:?}, archived after {archived:?}, all again after {:?}",
        started.elapsed()
    );
}

#[test]
fn pub_then_to_file_writes_every_line_exactly_once_across_sigkills() {
    let kills = [
        (Kill::ToFile, 90_000),
        (Kill::Server, 60_000),
        (Kill::ToFile, 30_000),
    ];
    publish_and_archive(100_000, &kills, &["--max-in-flight=1000"]);
}

#[test]
fn gzip_output_is_exactly_once_across_sigkill() {
    publish_and_archive(
        20_000,
        &[(Kill::ToFile, 15_000)],
        &["--gzip", "--max-in-flight=500", "--rotate-size=50000"],
    );
}

#[test]
fn tail_prints_n_bodies_and_fins_them() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    create_topic_and_channel(server.http_address, "events", "c");
    let mut publisher = RawClient::connect(server.tcp_address);
    for n in 0..5 {
        publisher.publish("events", format!("m{n}").as_bytes());
    }
    let nsqd = format!("--nsqd-tcp-address={}", server.tcp_address);
    let args = ["tail", &nsqd, "--topic=events", "--channel=c", "-n", "3"];
    assert_eq!(ok(&args, b""), "m0\nm1\nm2\n");
    wait_until("the shown messages FINed", || {
        channel_depth(&server, "events", "c") == (2, 0)
    });
    // The default channel is a new ephemeral one: it sees new messages only.
    let tail = std::thread::spawn({
        let nsqd = nsqd.clone();
        move || {
            ok(
                &["tail", &nsqd, "--topic=events", "--n=2", "--print-topic"],
                b"",
            )
        }
    });
    wait_until("the tail channel", || {
        let stats = server.get("/stats?format=json&topic=events");
        stats.body.contains("#ephemeral")
    });
    publisher.publish("events", b"new1");
    publisher.publish("events", b"new2");
    assert_eq!(tail.join().unwrap(), "events | new1\nevents | new2\n");
}

#[test]
fn discovery_through_lookupd_and_stat_rows() {
    let lookupd = Lookupd::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let lookupd_flag = format!("--lookupd-tcp-address={}", lookupd.tcp_address);
    let server = Server::start(
        data.path(),
        &[&lookupd_flag, "--broadcast-address=127.0.0.1"],
    );
    create_topic_and_channel(server.http_address, "orders", "billing");
    wait_until("the topic registered", || {
        !lookupd.producers("orders").is_empty()
    });
    let lookup = format!("--lookupd-http-address={}", lookupd.http_address);
    ok(&["pub", &lookup, "--topic=orders"], b"a\nb\n\nc\n");
    assert_eq!(channel_depth(&server, "orders", "billing"), (3, 0));

    let nsqd_http = format!("--nsqd-http-address={}", server.http_address);
    for source in [&nsqd_http, &lookup] {
        let stdout = ok(
            &[
                "stat",
                source,
                "--topic=orders",
                "--channel=billing",
                "--count-of=2",
                "--status-every=50ms",
            ],
            b"",
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{stdout}");
        assert!(lines[1].contains("ingress  egress |   total"), "{stdout}");
        for row in &lines[2..] {
            let columns: Vec<&str> = row.split_whitespace().collect();
            // ingress egress | total mem disk inflt def | req t-o msgs clients
            assert_eq!(columns[3], "3", "depth: {row}");
            assert_eq!(columns[11], "3", "messages: {row}");
        }
        assert_eq!(
            lines[3].split_whitespace().next(),
            Some("0"),
            "no ingress: {stdout}"
        );
    }
    let tail = ok(
        &[
            "tail",
            &lookup,
            "--topic=orders",
            "--channel=billing",
            "-n",
            "3",
        ],
        b"",
    );
    assert_eq!(tail, "a\nb\nc\n");
}

#[test]
fn errors_are_one_line_and_a_non_zero_exit() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dead_tcp = format!("--nsqd-tcp-address={dead}");
    fails(
        &["pub", "--nsqd-tcp-address=nope", "--topic=t"],
        b"x\n",
        "invalid --nsqd-tcp-address \"nope\": missing :PORT",
    );
    fails(
        &["pub", &dead_tcp, "--topic=t"],
        b"x\n",
        &format!("connecting to nsqd at {dead}"),
    );
    fails(
        &["pub", "--topic=t"],
        b"x\n",
        "--nsqd-tcp-address or --lookupd-http-address required",
    );
    fails(
        &["tail", &dead_tcp, "--topic=t"],
        b"",
        &format!("connecting to nsqd at {dead}"),
    );
    let dead_lookupd = format!("--lookupd-http-address={dead}");
    fails(
        &["tail", &dead_lookupd, "--topic=t"],
        b"",
        &format!("lookupd {dead}"),
    );
    let dead_http = format!("--nsqd-http-address={dead}");
    fails(
        &["stat", &dead_http, "--topic=t", "--channel=c"],
        b"",
        "failed to get nsqd stats",
    );
    let out = tempfile::tempdir().unwrap();
    let dir = format!("--output-dir={}", out.path().display());
    fails(
        &["to-file", &dead_tcp, "--topic=t", &dir],
        b"",
        &format!("connecting to nsqd at {dead}"),
    );

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--max-msg-size=10"]);
    let nsqd = format!("--nsqd-tcp-address={}", server.tcp_address);
    fails(
        &["pub", &nsqd, "--topic=t"],
        b"short\nmuch too long for it\n",
        "E_BAD_MESSAGE",
    );
    fails(&["pub", &nsqd, "--topic=bad/name"], b"x\n", "E_BAD_TOPIC");
    fails(
        &["pub", &nsqd, "--topic=t", "--file=/nonexistent/lines"],
        b"",
        "opening --file /nonexistent/lines",
    );
    fails(
        &[
            "stat",
            &format!("--nsqd-http-address={}", server.http_address),
            "--topic=t",
            "--channel=c",
        ],
        b"",
        "failed to find channel(c)",
    );
    std::fs::write(
        out.path().join(".t.nsq_to_file.to-file-journal"),
        b"garbage!garbage",
    )
    .unwrap();
    fails(
        &["to-file", &nsqd, "--topic=t", &dir],
        b"",
        "not a ledgerq to-file journal",
    );

    for tool in ["pub", "tail", "to-file", "stat"] {
        let help = ok(&[tool, "--help"], b"");
        assert!(help.contains("--topic"), "{tool}: {help}");
    }
}

/// `pub` and `tail` against a node that requires TLS with client
/// certificates and AUTH: they upgrade, present their certificate, send the
/// secret, and publish and read; without the secret they fail in one line.
#[test]
fn pub_and_tail_speak_tls_and_auth() {
    let certs = common::certs::Certs::generate();
    let auth = common::auth_server::AuthServer::start();
    let node = certs.ca.node("node");
    let flags = [
        format!("--tls-cert={}", node.cert_arg()),
        format!("--tls-key={}", node.key_arg()),
        format!("--tls-root-ca-file={}", certs.ca.cert_arg()),
        "--tls-client-auth-policy=require-verify".to_string(),
        auth.flag(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &flags);
    let operator = certs.ca.client("operator");
    let secret = data.path().join("secret");
    std::fs::write(&secret, "pubsub\n").unwrap();
    let client_flags = [
        format!("--nsqd-tcp-address={}", server.tcp_address),
        format!("--tls-root-ca-file={}", certs.ca.cert_arg()),
        format!("--tls-cert={}", operator.cert_arg()),
        format!("--tls-key={}", operator.key_arg()),
        format!("--auth-secret-file={}", secret.display()),
    ];
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(client_flags.iter().cloned());
        all
    };
    let publish = with(&["pub", "--topic=orders-tls"]);
    let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
    ok(&publish, b"one\ntwo\n");
    let tail = with(&["tail", "--topic=orders-tls", "--channel=c", "-n", "2"]);
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    assert_eq!(ok(&tail, b""), "one\ntwo\n");
    assert!(auth.asked("pubsub") >= 2, "both tools sent AUTH");
    // Without the secret the node refuses the publish, in one line.
    let mut bare = publish.clone();
    bare.retain(|a| !a.starts_with("--auth-secret-file"));
    fails(&bare, b"three\n", "E_AUTH_FIRST AUTH required before");
}
