//! A channel on a member that does not dispatch (a follower, in redundancy
//! mode) follows the leader's dispatch decisions as they are applied, so
//! its `/stats` show the group's state: what the leader delivered leaves
//! the depth, what it finished is gone, what it requeued is ready again.
//! Nothing is ever in flight here; a rebuild at the next term replaces
//! all of it from the durable state anyway.

use super::{Channel, Pending};

impl Channel {
    /// The leader delivered every offset below `delivered_up_to` at least
    /// once, and delivered `redelivered` again.
    pub fn follow_deliver(&mut self, delivered_up_to: u64, redelivered: &[u64]) {
        if delivered_up_to > self.read_cursor {
            self.read_cursor = delivered_up_to;
            let cursor = self.read_cursor;
            self.prefetch.retain(|message| message.offset >= cursor);
        }
        self.forget(redelivered);
    }

    /// The leader's consumers finished these offsets.
    pub fn follow_finish(&mut self, offsets: &[u64]) {
        self.forget(offsets);
    }

    /// The leader requeued `offset`: ready again at once, or at
    /// `deliver_at_ms`.
    pub fn follow_requeue(&mut self, offset: u64, attempts: u16, deliver_at_ms: u64, now_ms: u64) {
        self.forget(&[offset]);
        if deliver_at_ms > now_ms {
            self.deferred.insert((deliver_at_ms, offset), attempts);
        } else {
            self.requeued.push_back(Pending {
                offset,
                attempts,
                message: None,
            });
        }
    }

    fn forget(&mut self, offsets: &[u64]) {
        if offsets.is_empty() {
            return;
        }
        self.requeued
            .retain(|pending| !offsets.contains(&pending.offset));
        self.deferred
            .retain(|(_, offset), _| !offsets.contains(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_with_backlog() -> Channel {
        let mut channel = Channel::new(7, "c".into(), false, 10);
        for offset in 0..10 {
            channel.restore(offset, 1, 0, 1_000);
        }
        channel
    }

    #[test]
    fn a_follower_channel_tracks_the_leaders_deliveries_and_finishes() {
        let mut channel = channel_with_backlog();
        assert_eq!(channel.depth(20), 20);
        channel.follow_deliver(15, &[0, 1]);
        assert_eq!(channel.depth(20), 8 + 5);
        channel.follow_finish(&[2, 3, 4]);
        assert_eq!(channel.depth(20), 5 + 5);
        channel.follow_requeue(0, 2, 0, 1_000);
        assert_eq!(channel.depth(20), 6 + 5);
        channel.follow_requeue(1, 2, 5_000, 1_000);
        assert_eq!((channel.depth(20), channel.deferred_count()), (11, 1));
        channel.follow_deliver(12, &[]);
        assert_eq!(channel.read_cursor(), 15, "the cursor never goes back");
        assert_eq!(channel.in_flight_count(), 0);
    }
}
