//! The accounting counters, kept in the `counters` tree and changed only inside the same
//! transaction as the records they count, so that at every moment
//! `accepted = pending + in_flight + delivered + dead + quarantined + purged`.

use super::record::Status;
use serde::{Deserialize, Serialize};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

pub const ACCEPTED: &str = "accepted";
pub const QUARANTINED: &str = "quarantined";
pub const PURGED: &str = "purged";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub accepted: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub quarantined: u64,
    pub purged: u64,
}

impl Counts {
    /// True when the accounting identity holds.
    pub fn balanced(&self) -> bool {
        self.accepted
            == self.pending
                + self.in_flight
                + self.delivered
                + self.dead
                + self.quarantined
                + self.purged
    }

    pub fn get(&self, name: &str) -> u64 {
        match name {
            ACCEPTED => self.accepted,
            "pending" => self.pending,
            "in_flight" => self.in_flight,
            "delivered" => self.delivered,
            "dead" => self.dead,
            QUARANTINED => self.quarantined,
            PURGED => self.purged,
            _ => 0,
        }
    }

    pub const NAMES: [&'static str; 7] = [
        ACCEPTED,
        "pending",
        "in_flight",
        "delivered",
        "dead",
        QUARANTINED,
        PURGED,
    ];

    pub fn from_tree(tree: &sled::Tree) -> sled::Result<Counts> {
        let mut c = Counts::default();
        for name in Counts::NAMES {
            let v = tree.get(name)?.map_or(0, |v| decode(&v));
            *c.slot(name) = v;
        }
        Ok(c)
    }

    fn slot(&mut self, name: &str) -> &mut u64 {
        match name {
            ACCEPTED => &mut self.accepted,
            "pending" => &mut self.pending,
            "in_flight" => &mut self.in_flight,
            "delivered" => &mut self.delivered,
            "dead" => &mut self.dead,
            QUARANTINED => &mut self.quarantined,
            _ => &mut self.purged,
        }
    }
}

fn decode(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Counter changes gathered during a transaction and written once at its end.
#[derive(Debug, Default)]
pub struct Deltas(Vec<(&'static str, i64)>);

impl Deltas {
    pub fn add(&mut self, name: &'static str, by: i64) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v += by,
            None => self.0.push((name, by)),
        }
    }

    pub fn status(&mut self, status: Status, by: i64) {
        self.add(status.as_str(), by);
    }

    pub fn apply(&self, tree: &TransactionalTree) -> Result<(), UnabortableTransactionError> {
        for (name, by) in &self.0 {
            if *by == 0 {
                continue;
            }
            let cur = tree.get(name)?.map_or(0, |v| decode(&v));
            let next = (cur as i64 + by).max(0) as u64;
            tree.insert(*name, &next.to_be_bytes())?;
        }
        Ok(())
    }
}
