//! The broker without sockets: a real store in a temporary directory,
//! clients as plain queues. Publish, dispatch past the cache (store reads
//! outside the lock), admin operations and recovery.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledgerq_storage::StoreOptions;
use tokio::sync::mpsc;

use super::client::{ClientAuth, ClientId, ClientInfo, Outbound};
use super::{AdminAction, AdminTarget, Broker, BrokerError, BrokerOptions};
use crate::broker::stats::StatsFilter;

const DEADLINE: Duration = Duration::from_secs(10);

pub(super) fn open(dir: &std::path::Path, mem_queue_size: usize) -> Arc<Broker> {
    let options = BrokerOptions {
        mem_queue_size,
        ..BrokerOptions::default()
    };
    Broker::open(StoreOptions::new(dir), options).expect("open the broker")
}

pub(super) async fn close(broker: Arc<Broker>) {
    broker.shutdown();
    let weak: Weak<Broker> = Arc::downgrade(&broker);
    drop(broker);
    let deadline = Instant::now() + DEADLINE;
    while weak.strong_count() > 0 {
        assert!(Instant::now() < deadline, "broker not released");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(super) fn bodies(count: usize) -> Vec<Bytes> {
    (0..count).map(|i| Bytes::from(format!("m{i}"))).collect()
}

pub(super) async fn consumer(
    broker: &Arc<Broker>,
    topic: &str,
    channel: &str,
    rdy: u64,
) -> (ClientId, mpsc::UnboundedReceiver<Outbound>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let client = broker.register_client(ClientInfo::default(), sender);
    broker
        .subscribe(client, topic, channel, 0)
        .await
        .expect("SUB");
    broker.ready(client, rdy);
    (client, receiver)
}

/// The next message frame: `(offset, attempts)`.
pub(super) async fn next(receiver: &mut mpsc::UnboundedReceiver<Outbound>) -> (u64, u16) {
    match tokio::time::timeout(DEADLINE, receiver.recv()).await {
        Ok(Some(Outbound::Message { message, attempts })) => (message.offset, attempts),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn topic_depth(broker: &Broker, topic: &str) -> u64 {
    let filter = StatsFilter {
        topic: Some(topic.into()),
        ..StatsFilter::default()
    };
    broker.stats(&filter).topics.expect("topic")[0].depth
}

#[tokio::test]
async fn a_publish_is_visible_once_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 100);
    broker.publish("t", bodies(3), 0).await.unwrap();
    assert_eq!(
        topic_depth(&broker, "t"),
        3,
        "answered after the applier took it"
    );
    close(broker).await;
}

#[tokio::test]
async fn a_backlog_past_the_cache_is_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 2);
    for _ in 0..5 {
        broker.publish("t", bodies(120), 0).await.unwrap();
    }
    let (_client, mut frames) = consumer(&broker, "t", "c", 1000).await;
    for offset in 0..600 {
        assert_eq!(next(&mut frames).await, (offset, 1));
    }
    close(broker).await;
}

#[tokio::test]
async fn admin_operations_take_effect_before_they_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 100);
    let missing = broker
        .admin(AdminTarget::Topic("nope"), AdminAction::Pause(true))
        .await;
    assert_eq!(missing, Err(BrokerError::TopicNotFound));
    broker.ensure_topic("t").await.unwrap();
    let missing = broker
        .admin(AdminTarget::Channel("t", "nope"), AdminAction::Empty)
        .await;
    assert_eq!(missing, Err(BrokerError::ChannelNotFound));

    let (_client, mut frames) = consumer(&broker, "t", "c", 10).await;
    let channel = AdminTarget::Channel("t", "c");
    broker
        .admin(channel, AdminAction::Pause(true))
        .await
        .unwrap();
    broker.publish("t", bodies(2), 0).await.unwrap();
    assert!(
        frames.try_recv().is_err(),
        "a paused channel delivers nothing"
    );
    broker
        .admin(channel, AdminAction::Pause(false))
        .await
        .unwrap();
    assert_eq!(next(&mut frames).await, (0, 1));
    assert_eq!(next(&mut frames).await, (1, 1));

    broker
        .admin(AdminTarget::Topic("t"), AdminAction::Pause(true))
        .await
        .unwrap();
    broker.publish("t", bodies(4), 0).await.unwrap();
    assert_eq!(
        topic_depth(&broker, "t"),
        4,
        "a paused topic keeps its messages"
    );
    broker
        .admin(AdminTarget::Topic("t"), AdminAction::Empty)
        .await
        .unwrap();
    assert_eq!(topic_depth(&broker, "t"), 0);

    broker.admin(channel, AdminAction::Delete).await.unwrap();
    match tokio::time::timeout(DEADLINE, frames.recv()).await {
        Ok(Some(Outbound::Close)) => {}
        other => panic!("a deleted channel's subscriber is closed, got {other:?}"),
    }
    assert!(!broker.topology()["t"].contains("c"));
    close(broker).await;
}

#[tokio::test]
async fn ephemeral_topics_change_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 100);
    let (_client, mut frames) = consumer(&broker, "e#ephemeral", "c", 10).await;
    broker.publish("e#ephemeral", bodies(1), 0).await.unwrap();
    assert_eq!(next(&mut frames).await, (0, 1));
    broker
        .admin(AdminTarget::Topic("e#ephemeral"), AdminAction::Delete)
        .await
        .unwrap();
    assert!(!broker.has_topic("e#ephemeral"));
    close(broker).await;
}

#[tokio::test]
async fn attempts_continue_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 100);
    broker.publish("t", bodies(2), 0).await.unwrap();
    let (client, mut frames) = consumer(&broker, "t", "c", 10).await;
    assert_eq!(next(&mut frames).await, (0, 1));
    assert_eq!(next(&mut frames).await, (1, 1));
    broker
        .finish(client, &super::message::encode_id(1, 1))
        .unwrap();
    broker.unregister_client(client);
    close(broker).await;

    let broker = open(dir.path(), 100);
    let (_client, mut frames) = consumer(&broker, "t", "c", 10).await;
    let (offset, attempts) = next(&mut frames).await;
    // Offset 1 may come back too (its FIN is lazy), never offset 0 reset.
    assert_eq!(offset, 0);
    assert_eq!(attempts, 2, "the delivery before the restart counts");
    close(broker).await;
}

#[tokio::test]
async fn a_clients_auth_shows_in_stats_and_survives_identify() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 100);
    let (client, _frames) = consumer(&broker, "t", "c", 1).await;
    let auth = ClientAuth {
        authed: true,
        identity: "alice".to_owned(),
        identity_url: "https://id.example/alice".to_owned(),
    };
    broker.set_client_auth(client, auth.clone());
    // AUTH may come before IDENTIFY, which must not forget it.
    let info = ClientInfo {
        client_id: "after-identify".to_owned(),
        ..ClientInfo::default()
    };
    broker.configure_client(client, info, 60_000, 0);
    let filter = StatsFilter {
        include_clients: true,
        ..StatsFilter::default()
    };
    let topics = broker.stats(&filter).topics.expect("topics");
    let shown = &topics[0].channels[0].clients[0];
    assert_eq!(shown.client_id, "after-identify");
    assert_eq!(shown.auth, auth);
    close(broker).await;
}
