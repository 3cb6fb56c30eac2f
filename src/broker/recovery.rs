//! Recovery: rebuilds the broker's topics and channels from the recovered
//! state machine after any restart, clean or not.
//!
//! For each durable channel, every offset in `[floor, delivered_up_to)` that
//! is not finished is ready again (or deferred, if its REQ delay or DPUB time
//! is still ahead), with the attempts count that was persisted: the cursor
//! record's if there is one, else 1 for an immediate message (delivered once,
//! covered by `delivered_up_to`) or 0 for a message deferred at publish (its
//! first delivery would have written a record). Ephemeral channels do not
//! survive a restart; they are returned for deletion. A rebuild while
//! running (redundancy mode: a new term, a snapshot) keeps them.

use ledgerq_storage::{ChannelState, StateMachine, StorageError, Store};

use super::channel::Channel;
use super::topic::Topic;

pub struct Recovered {
    pub topics: Vec<Topic>,
    pub stale_ephemeral_channels: Vec<u64>,
}

pub fn recover(
    store: &Store,
    state: &StateMachine,
    cache_capacity: usize,
    now_ms: u64,
    keep_ephemeral: bool,
) -> Result<Recovered, StorageError> {
    let mut topics = Vec::new();
    let mut stale_ephemeral_channels = Vec::new();
    for stored in state.topics() {
        let meta = &stored.meta;
        let mut topic = Topic::recovered(stored.id, meta, cache_capacity);
        for channel_id in &stored.channels {
            let stored_channel = state.channel(*channel_id).expect("state is consistent");
            if stored_channel.meta.ephemeral && !keep_ephemeral {
                stale_ephemeral_channels.push(*channel_id);
                continue;
            }
            let channel = recover_channel(store, stored.id, stored_channel, now_ms)?;
            topic.add_channel(channel);
        }
        tracing::info!(topic = %meta.name, next_offset = meta.next_offset, channels = stored.channels.len(), "recovered topic");
        topics.push(topic);
    }
    Ok(Recovered {
        topics,
        stale_ephemeral_channels,
    })
}

fn recover_channel(
    store: &Store,
    topic_id: u64,
    stored: &ChannelState,
    now_ms: u64,
) -> Result<Channel, StorageError> {
    let meta = &stored.meta;
    let ephemeral = meta.ephemeral;
    let mut channel = Channel::new(
        stored.id,
        meta.name.clone(),
        ephemeral,
        meta.delivered_up_to,
    );
    channel.set_paused(meta.paused);
    let mut offset = meta.floor;
    while offset < meta.delivered_up_to {
        let wanted = (meta.delivered_up_to - offset).min(1024) as usize;
        let entries = store.read_log(topic_id, offset, wanted)?;
        let Some(&(last, _)) = entries.last() else {
            break;
        };
        for (entry_offset, record) in entries {
            if entry_offset >= meta.delivered_up_to {
                break;
            }
            let cursor = stored.records.get(&entry_offset);
            if cursor.is_some_and(|c| c.finished) {
                continue;
            }
            let (attempts, deliver_at_ms) = match cursor {
                Some(c) => (c.attempts, c.deliver_at_ms),
                None if record.deliver_at_ms > 0 => (0, record.deliver_at_ms),
                None => (1, 0),
            };
            channel.restore(entry_offset, attempts, deliver_at_ms, now_ms);
        }
        offset = last + 1;
    }
    Ok(channel)
}
