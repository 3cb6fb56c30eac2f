//! ledgerq's rules for the replicated state machine, driven through
//! `RaftStateMachine::apply` directly: tickets only for this very process,
//! stale dispatch decisions refused, a Rebuild at our own leader's blank
//! entry, applied state across a restart, snapshot transfer and a snapshot
//! install interrupted by a crash or refused.

mod raft_support;

use raft_support::*;

// ---------------------------------------------------------------------------
// 2. ledgerq's rules of the replicated state machine
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tickets_are_reported_only_to_the_process_that_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);

    let commands = vec![(7, create_topic("t")), (8, publish(1, &["a", "b"]))];
    node.apply(vec![normal((1, 0, 1), ME, 0, commands)]).await;
    let first = node.next_applied();
    assert_eq!(
        first,
        AppliedEntry {
            index: 1,
            command: create_topic("t"),
            outcome: Ok(Outcome::TopicCreated {
                topic: 1,
                created: true
            }),
            ticket: Some(7),
        }
    );
    let second = node.next_applied();
    assert_eq!(
        second,
        AppliedEntry {
            index: 2,
            command: publish(1, &["a", "b"]),
            outcome: Ok(Outcome::Published {
                topic: 1,
                first_offset: 0,
                count: 2,
                handed_over: 0
            }),
            ticket: Some(8),
        }
    );

    // The same node in another run of its process, then another node: the
    // tickets are not ours.
    let restarted = Origin { node: 0, boot: 2 };
    let other_node = Origin { node: 2, boot: 1 };
    let entries = vec![
        normal(
            (1, 0, 2),
            restarted,
            0,
            vec![(7, create_topic("u")), (8, publish(1, &["c"]))],
        ),
        normal(
            (1, 0, 3),
            other_node,
            0,
            vec![(7, create_topic("v")), (8, publish(1, &["d"]))],
        ),
    ];
    node.apply(entries).await;
    let expected = [
        (
            3,
            Outcome::TopicCreated {
                topic: 2,
                created: true,
            },
        ),
        (
            4,
            Outcome::Published {
                topic: 1,
                first_offset: 2,
                count: 1,
                handed_over: 0,
            },
        ),
        (
            5,
            Outcome::TopicCreated {
                topic: 3,
                created: true,
            },
        ),
        (
            6,
            Outcome::Published {
                topic: 1,
                first_offset: 3,
                count: 1,
                handed_over: 0,
            },
        ),
    ];
    for (index, outcome) in expected {
        let applied = node.next_applied();
        assert_eq!(applied.index, index);
        assert_eq!(applied.outcome, Ok(outcome));
        assert_eq!(
            applied.ticket, None,
            "not proposed by this process: {applied:?}"
        );
    }
    node.assert_no_event();

    let (applied, _) = node.sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 0, 3)));
    assert_eq!(node.sm.state().applied_index(), 6);
    let bodies: Vec<Bytes> = node.messages(1).into_iter().map(|(_, m)| m.body).collect();
    assert_eq!(bodies, ["a", "b", "c", "d"].map(Bytes::from));
}

/// Topic 1 with channel 2 and three messages handed over to it, in one
/// entry at index 1 of `term`; the events are consumed.
async fn topic_with_channel(node: &mut Node, term: u64) {
    let commands = vec![
        (1, create_topic("t")),
        (2, create_channel(1, "c")),
        (3, publish(1, &["m0", "m1", "m2"])),
    ];
    node.apply(vec![normal((term, 0, 1), ME, 0, commands)])
        .await;
    assert_eq!(
        node.next_applied().outcome,
        Ok(Outcome::TopicCreated {
            topic: 1,
            created: true
        })
    );
    assert!(matches!(
        node.next_applied().outcome,
        Ok(Outcome::ChannelCreated {
            topic: 1,
            channel: 2,
            created: true,
            ..
        })
    ));
    assert_eq!(
        node.next_applied().outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 0,
            count: 3,
            handed_over: 3
        })
    );
}

#[tokio::test]
async fn dispatch_decisions_of_another_term_are_refused_but_take_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);
    topic_with_channel(&mut node, 4).await;

    // Made by the leader of term 3, committed in an entry of term 4.
    node.apply(vec![normal((4, 0, 2), ME, 3, vec![(10, deliver(2, 2))])])
        .await;
    let stale = node.next_applied();
    assert_eq!(stale.index, 4);
    assert_eq!(stale.ticket, Some(10));
    assert_eq!(
        stale.outcome,
        Err(ApplyError::StaleTerm {
            made_in: 3,
            committed_in: 4
        })
    );
    assert_eq!(node.sm.state().applied_index(), 4);
    assert_eq!(node.sm.state().channel(2).unwrap().meta.delivered_up_to, 0);

    // A stale proposal's other commands apply; only dispatch is refused.
    let mixed = vec![(11, publish(1, &["m3"])), (12, finish(2, &[0]))];
    node.apply(vec![normal((4, 0, 3), ME, 3, mixed)]).await;
    let published = node.next_applied();
    assert_eq!(published.index, 5);
    assert_eq!(
        published.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 3,
            count: 1,
            handed_over: 4
        })
    );
    let stale_finish = node.next_applied();
    assert_eq!(stale_finish.index, 6);
    assert_eq!(
        stale_finish.outcome,
        Err(ApplyError::StaleTerm {
            made_in: 3,
            committed_in: 4
        })
    );

    // The same decisions made in term 4 apply.
    let current = vec![(13, deliver(2, 2)), (14, finish(2, &[0]))];
    node.apply(vec![normal((4, 0, 4), ME, 4, current)]).await;
    let delivered = node.next_applied();
    assert_eq!(
        (delivered.index, delivered.outcome),
        (7, Ok(Outcome::Delivered))
    );
    let finished = node.next_applied();
    assert_eq!(
        (finished.index, finished.outcome),
        (
            8,
            Ok(Outcome::Finished {
                channel: 2,
                floor: 1
            })
        )
    );
    node.assert_no_event();
    let channel = &node.sm.state().channel(2).unwrap().meta;
    assert_eq!((channel.delivered_up_to, channel.floor), (2, 1));

    // The refusal holds after a restart too (the index was persisted).
    let before = node.sm.state().clone();
    node.close();
    let node = Node::open(dir.path(), ME);
    assert_eq!(node.sm.state(), &before);
    assert_eq!(node.sm.state().applied_index(), 8);
}

#[tokio::test]
async fn our_leaders_blank_entry_rebuilds_as_of_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);

    // One apply call: a proposal, our own leader's blank, another proposal.
    let entries = vec![
        normal(
            (1, 1, 1),
            ME,
            0,
            vec![(1, create_topic("t")), (2, publish(1, &["x"]))],
        ),
        blank(2, 0, 2),
        normal((2, 0, 3), ME, 0, vec![(3, publish(1, &["y"]))]),
    ];
    node.apply(entries).await;
    let mut last_applied = 0;
    for _ in 0..2 {
        last_applied = node.next_applied().index;
    }
    assert_eq!(last_applied, 2);
    match node.next_event() {
        LogEvent::Rebuild { state, leader_term } => {
            assert_eq!(leader_term, Some(2));
            assert_eq!(state.applied_index(), last_applied);
            let topic = state.topic(1).expect("the topic of the entry before");
            assert_eq!(topic.meta.next_offset, 1, "as of the blank, not after");
        }
        other => panic!("expected a Rebuild, got {other:?}"),
    }
    assert_eq!(node.next_applied().index, 3);
    node.assert_no_event();

    // Another leader's blank entry: nothing to rebuild here.
    node.apply(vec![blank(3, 1, 4)]).await;
    node.assert_no_event();
    let (applied, _) = node.sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 1, 4)));
}

#[tokio::test]
async fn applied_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);
    assert_eq!(
        node.sm.applied_state().await.unwrap(),
        (None, StoredMembership::default())
    );

    let entries = vec![
        entry(1, 0, 1, EntryPayload::Membership(two_members())),
        normal(
            (1, 0, 2),
            ME,
            0,
            vec![(1, create_topic("t")), (2, publish(1, &["a"]))],
        ),
        blank(2, 1, 3),
    ];
    node.apply(entries).await;
    let expected = (
        Some(log_id(2, 1, 3)),
        StoredMembership::new(Some(log_id(1, 0, 1)), two_members()),
    );
    assert_eq!(node.sm.applied_state().await.unwrap(), expected);
    let state = node.sm.state().clone();
    node.close();

    let mut node = Node::open(dir.path(), ME);
    assert_eq!(node.sm.applied_state().await.unwrap(), expected);
    assert_eq!(node.sm.applied(), Some(log_id(2, 1, 3)));
    assert_eq!(node.sm.state(), &state);
    assert_eq!(node.sm.state().applied_index(), 2);
    assert_eq!(node.messages(1).len(), 1);
    node.assert_no_event();

    // Applying goes on from there.
    node.apply(vec![normal(
        (2, 1, 4),
        ME,
        0,
        vec![(3, publish(1, &["b"]))],
    )])
    .await;
    let applied = node.next_applied();
    assert_eq!(applied.index, 3);
    assert_eq!(
        applied.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 1,
            count: 1,
            handed_over: 0
        })
    );
}

/// Node A with a membership, a topic, a channel and messages, and a
/// snapshot of it, built: (A, the snapshot's meta, its bytes).
async fn leader_with_snapshot(root: &Path) -> (Node, ledgerq_storage::raft::SnapshotMeta, Vec<u8>) {
    let mut a = Node::open(root, ME);
    let entries = vec![
        entry(1, 0, 1, EntryPayload::Membership(two_members())),
        normal(
            (1, 0, 2),
            ME,
            0,
            vec![
                (1, create_topic("t")),
                (2, create_channel(1, "c")),
                (3, publish(1, &["m0", "m1"])),
            ],
        ),
        normal(
            (1, 0, 3),
            ME,
            1,
            vec![
                (4, deliver(2, 1)),
                (5, publish_keyed(1, &["m2", "m3", "m4"], "k")),
            ],
        ),
        normal((1, 0, 4), ME, 1, vec![(6, finish(2, &[0]))]),
    ];
    a.apply(entries).await;
    while a.events.try_recv().is_ok() {}

    let mut snapshot =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 0, 4)));
    assert_eq!(
        snapshot.meta.last_membership,
        StoredMembership::new(Some(log_id(1, 0, 1)), two_members())
    );
    let bytes = read_all(&mut snapshot.snapshot).await;
    assert!(!bytes.is_empty(), "a snapshot archive has content");
    (a, snapshot.meta, bytes)
}

/// Streams A's current snapshot into B as openraft does: begin receiving,
/// write the bytes into the file handed out, install with that file.
async fn transfer_snapshot(a: &mut Node, b: &mut Node) -> ledgerq_storage::raft::SnapshotMeta {
    let current =
        a.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("A has a current snapshot");
    let mut source = current.snapshot;
    let mut received =
        b.sm.begin_receiving_snapshot()
            .await
            .expect("begin receiving");
    let copied = tokio::io::copy(&mut *source, &mut *received)
        .await
        .expect("copy the snapshot");
    assert!(copied > 0);
    received.flush().await.unwrap();
    received.shutdown().await.unwrap();
    b.sm.install_snapshot(&current.meta, received)
        .await
        .expect("install the snapshot");
    current.meta
}

#[tokio::test]
async fn a_snapshot_moves_the_whole_state_to_another_node() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, built, built_bytes) = leader_with_snapshot(a_dir.path()).await;

    let mut b = Node::open(b_dir.path(), Origin { node: 1, boot: 1 });
    assert!(b.sm.get_current_snapshot().await.unwrap().is_none());
    let meta = transfer_snapshot(&mut a, &mut b).await;
    assert_eq!(meta, built);

    assert_eq!(
        b.sm.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    assert_eq!(b.messages(1), a.messages(1));
    assert_eq!(b.messages(1).len(), 5);
    assert_eq!(b.sm.state(), a.sm.state());
    assert_eq!(b.sm.state().dedup().len(), 1, "the window came along");
    match b.next_event() {
        LogEvent::Rebuild { state, leader_term } => {
            assert_eq!(leader_term, None);
            assert_eq!(&*state, a.sm.state());
            assert_eq!(state.applied_index(), 6);
        }
        other => panic!("expected a Rebuild, got {other:?}"),
    }
    b.assert_no_event();

    let mut current =
        b.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("B keeps the installed snapshot");
    assert_eq!(current.meta, meta);
    assert_eq!(read_all(&mut current.snapshot).await, built_bytes);

    // B applies what follows the snapshot, numbering commands on from it.
    b.apply(vec![normal(
        (2, 1, 5),
        ME,
        0,
        vec![(9, publish(1, &["m5"]))],
    )])
    .await;
    let applied = b.next_applied();
    assert_eq!(applied.index, 7);
    assert_eq!(applied.ticket, None, "proposed by node 0, not by B");
    assert_eq!(
        applied.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 5,
            count: 1,
            handed_over: 6
        })
    );

    // The key published before the snapshot is still a duplicate on B.
    b.apply(vec![normal(
        (2, 1, 6),
        ME,
        0,
        vec![(10, publish_keyed(1, &["again"], "k"))],
    )])
    .await;
    assert_eq!(
        b.next_applied().outcome,
        Ok(Outcome::Duplicate {
            topic: 1,
            first_offset: 2,
            count: 3
        })
    );
    assert_eq!(b.messages(1).len(), 6);
}

#[tokio::test]
async fn an_install_interrupted_by_a_crash_is_redone_at_start() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, _, _) = leader_with_snapshot(a_dir.path()).await;
    let b_origin = Origin { node: 1, boot: 1 };
    let mut b = Node::open(b_dir.path(), b_origin);
    let meta = transfer_snapshot(&mut a, &mut b).await;
    let snapshot_state = b.sm.state().clone();
    let snapshot_messages = b.messages(1);

    // B goes on past the snapshot, then "crashes" with the marker present,
    // as if the install were still copying.
    let more = vec![(1, publish(1, &["late"])), (2, create_topic("x"))];
    b.apply(vec![normal((2, 1, 5), b_origin, 0, more)]).await;
    assert_ne!(b.sm.state(), &snapshot_state);
    assert_ne!(b.messages(1), snapshot_messages);
    b.close();
    let marker = snapshot_dir(b_dir.path()).join("INSTALLING");
    std::fs::write(&marker, b"").unwrap();

    let mut b = Node::open(b_dir.path(), b_origin);
    assert!(
        !marker.exists(),
        "the marker is removed once the install is redone"
    );
    assert_eq!(b.sm.state(), &snapshot_state);
    assert_eq!(b.sm.state().topic_id("x"), None);
    assert_eq!(b.messages(1), snapshot_messages);
    assert_eq!(
        b.sm.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    let current =
        b.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("still current");
    assert_eq!(current.meta, meta);
}

/// What a received snapshot that cannot be installed must leave behind:
/// the install fails, nothing else changes, and the node still starts.
#[tokio::test]
async fn a_snapshot_that_cannot_be_installed_changes_nothing() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, _, _) = leader_with_snapshot(a_dir.path()).await;
    let b_origin = Origin { node: 1, boot: 1 };
    let mut b = Node::open(b_dir.path(), b_origin);
    let good = transfer_snapshot(&mut a, &mut b).await;
    let state = b.sm.state().clone();

    // A later snapshot whose bytes are not an archive (a truncated or
    // garbled stream).
    let mut bad = good.clone();
    bad.last_log_id = Some(log_id(2, 0, 9));
    bad.snapshot_id = "2-9-garbled".into();
    let mut received = b.sm.begin_receiving_snapshot().await.unwrap();
    received.write_all(b"not a tar archive").await.unwrap();
    received.flush().await.unwrap();
    assert!(b.sm.install_snapshot(&bad, received).await.is_err());

    assert_eq!(b.sm.state(), &state);
    assert_eq!(b.sm.applied(), good.last_log_id);

    // Restart: the node must come up as it was, with its good snapshot.
    b.close();
    let (_store, mut sm, _events) = open_state_result(b_dir.path(), b_origin)
        .expect("the node starts again after a failed install");
    assert_eq!(sm.state(), &state);
    assert_eq!(sm.applied(), good.last_log_id);
    let current = sm.get_current_snapshot().await.unwrap().map(|s| s.meta);
    assert_eq!(
        current.map(|m| m.snapshot_id),
        Some(good.snapshot_id),
        "a snapshot that failed to install must not be offered to others"
    );
}

/// Building a snapshot copies no data: its directory hard-links the state
/// store's SST files. Only the snapshot just built is kept.
#[tokio::test]
async fn a_snapshot_hard_links_the_stores_files() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, first, _) = leader_with_snapshot(dir.path()).await;
    let second =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build another snapshot")
            .meta;
    assert_ne!(first.snapshot_id, second.snapshot_id);
    let mut names: Vec<String> = std::fs::read_dir(snapshot_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let id = second.snapshot_id.clone();
    assert_eq!(names, [id.clone(), format!("{id}.meta")]);
    let snapshot = snapshot_dir(dir.path()).join(&id);
    let mut linked = 0;
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".sst") {
            assert!(
                entry.metadata().unwrap().nlink() >= 2,
                "{entry:?} is a copy"
            );
            linked += 1;
        }
    }
    assert!(linked > 0, "the checkpoint has SST files");
}

/// What a crash leaves in the snapshot directory is cleaned up at start:
/// an unfinished checkpoint, a directory without metadata, a partial
/// receive; with two complete snapshots the newer one is current.
#[tokio::test]
async fn a_restart_keeps_the_newest_complete_snapshot_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, first, first_bytes) = leader_with_snapshot(dir.path()).await;
    let snapshots = snapshot_dir(dir.path());
    // A crash after the newer snapshot's metadata was written, before the
    // older one was deleted, is simulated by restoring an older metadata
    // file next to the current one under a smaller log id.
    let older = format!("0-0-0{}", "1");
    std::fs::create_dir(snapshots.join(&older)).unwrap();
    let mut older_meta = first.clone();
    older_meta.snapshot_id = older.clone();
    older_meta.last_log_id = None;
    let encoded =
        prost::Message::encode_to_vec(&ledgerq_storage::raft::snapshot_meta_to_pb(&older_meta));
    std::fs::write(snapshots.join(format!("{older}.meta")), encoded).unwrap();
    std::fs::create_dir(snapshots.join("checkpoint")).unwrap();
    std::fs::create_dir(snapshots.join("9-9-abc")).unwrap();
    std::fs::write(snapshots.join("receiving-1.tar"), b"partial").unwrap();
    std::fs::write(snapshots.join("x.meta.tmp"), b"partial").unwrap();
    drop(a);
    let mut reopened = Node::open(dir.path(), ME);
    let current = reopened
        .sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the current snapshot survives");
    assert_eq!(current.meta, first);
    let mut data = current.snapshot;
    assert_eq!(read_all(&mut data).await, first_bytes);
    let mut names: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let id = first.snapshot_id.clone();
    assert_eq!(names, [id.clone(), format!("{id}.meta")]);
}
