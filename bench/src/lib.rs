//! Benchmarks for ledgerq. They talk to a real `ledgerq serve` process over
//! the NSQ TCP protocol, with their own client ([`nsq`]), so they measure
//! what any NSQ client would see.

pub mod group;
pub mod nsq;
pub mod ports;
pub mod server;
pub mod util;
