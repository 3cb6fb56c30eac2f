//! Inspection against a real store with a tiny topic cache, so peeks read
//! requeued and unread messages back from the store, as dispatch does.

use super::super::stats::StatsFilter;
use super::super::tests::{bodies, close, consumer, next, open};
use super::{Peeked, Position};

fn offsets(peeked: &[Peeked]) -> Vec<u64> {
    peeked.iter().map(|p| p.message.offset).collect()
}

#[tokio::test]
async fn a_peek_past_the_cache_lists_what_dispatch_then_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 2);
    let (client, mut frames) = consumer(&broker, "t", "c", 0).await;
    broker.publish("t", bodies(5), 60_000).await.unwrap();
    broker.publish("t", bodies(300), 0).await.unwrap();
    let stats = broker.stats(&StatsFilter::default());
    let peeked = broker.peek_channel("t", "c", 100).unwrap();
    assert_eq!(offsets(&peeked), (5..105).collect::<Vec<_>>());
    assert!(peeked
        .iter()
        .all(|p| p.position == Position::Ready { attempts: 0 }));
    assert_eq!(peeked[0].message.body.as_ref(), b"m0");
    let fewer = broker.peek_channel("t", "c", 3).unwrap();
    assert_eq!(fewer[..], peeked[..3]);
    assert_eq!(broker.stats(&StatsFilter::default()), stats);
    broker.ready(client, 100);
    for expected in &peeked {
        assert_eq!(next(&mut frames).await, (expected.message.offset, 1));
    }
    close(broker).await;
}

#[tokio::test]
async fn deferred_messages_come_after_ready_ones_soonest_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 1);
    let (_client, _frames) = consumer(&broker, "t", "c", 0).await;
    broker.publish("t", bodies(2), 60_000).await.unwrap();
    broker.publish("t", bodies(1), 30_000).await.unwrap();
    broker.publish("t", bodies(1), 0).await.unwrap();
    let peeked = broker.peek_channel("t", "c", 10).unwrap();
    assert_eq!(offsets(&peeked), vec![3, 2, 0, 1]);
    let Position::Deferred { deliver_at_ms, .. } = peeked[1].position else {
        panic!("offset 2 is deferred: {:?}", peeked[1].position);
    };
    let now_ms = crate::clock::now_ms();
    assert!(deliver_at_ms > now_ms && deliver_at_ms <= now_ms + 30_000);
    // One message asked for: the ready one, found past three deferred.
    assert_eq!(offsets(&broker.peek_channel("t", "c", 1).unwrap()), vec![3]);
    close(broker).await;
}

#[tokio::test]
async fn requeued_messages_read_back_from_the_store_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 1);
    broker.publish("t", bodies(4), 0).await.unwrap();
    let (client, mut frames) = consumer(&broker, "t", "c", 2).await;
    assert_eq!(next(&mut frames).await, (0, 1));
    assert_eq!(next(&mut frames).await, (1, 1));
    broker.ready(client, 0);
    broker.unregister_client(client);
    close(broker).await;

    let broker = open(dir.path(), 1);
    let peeked = broker.peek_channel("t", "c", 10).unwrap();
    assert_eq!(offsets(&peeked), vec![0, 1, 2, 3]);
    assert_eq!(peeked[0].position, Position::Ready { attempts: 1 });
    assert_eq!(peeked[2].position, Position::Ready { attempts: 0 });
    let id = peeked[1].message.id;
    let report = broker.inspect_message("t", &id).unwrap().expect("found");
    assert_eq!(report.channels[0].position, Position::Ready { attempts: 1 });
    let (_client, mut frames) = consumer(&broker, "t", "c", 10).await;
    for expected in &peeked {
        let attempts = match expected.position {
            Position::Ready { attempts } => attempts + 1,
            other => panic!("only ready messages here: {other:?}"),
        };
        assert_eq!(next(&mut frames).await, (expected.message.offset, attempts));
    }
    close(broker).await;
}

#[tokio::test]
async fn a_memory_only_topic_is_peeked_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), 2);
    let (client, mut frames) = consumer(&broker, "e#ephemeral", "c", 0).await;
    broker.publish("e#ephemeral", bodies(3), 0).await.unwrap();
    // Offset 0 fell out of the two-message cache: gone, as dispatch finds.
    let peeked = broker.peek_channel("e#ephemeral", "c", 10).unwrap();
    assert_eq!(offsets(&peeked), vec![1, 2]);
    broker.ready(client, 10);
    assert_eq!(next(&mut frames).await, (1, 1));
    assert_eq!(next(&mut frames).await, (2, 1));
    close(broker).await;
}
