//! Fault injection for the embedded store and queue, for soak tests: a share of calls fail with
//! [`StoreError::Unavailable`], half of them before doing any work and half after their write
//! committed (the caller sees an error although the write happened). Off unless armed through
//! [`EmbeddedStore::inject_faults`](super::EmbeddedStore::inject_faults) /
//! [`EmbeddedQueue::inject_faults`](super::EmbeddedQueue::inject_faults); `herald serve` arms it
//! only for `--store-fault-rate`.

use rand::Rng;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails before touching the database.
    Before,
    /// The call does its work and commits, then reports a failure.
    After,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Before => "before",
            Fault::After => "after-commit",
        }
    }
}

/// One database's fault switch and its counts.
pub struct Faults {
    what: &'static str,
    /// The share of calls that fail, as `f64` bits.
    rate: AtomicU64,
    /// What the next calls do, whatever the rate (for tests): `None` lets a call through.
    script: Mutex<VecDeque<Option<Fault>>>,
    before: AtomicU64,
    after: AtomicU64,
    /// Each injected fault appends one line `<what> <when>` here, so the counts survive a SIGKILL.
    log: Option<Mutex<File>>,
}

impl Faults {
    /// `what` names the database in logs and counts (`store`, `queue`).
    pub fn new(what: &'static str, rate: f64) -> Faults {
        Faults {
            what,
            rate: AtomicU64::new(rate.clamp(0.0, 1.0).to_bits()),
            script: Mutex::new(VecDeque::new()),
            before: AtomicU64::new(0),
            after: AtomicU64::new(0),
            log: None,
        }
    }

    /// Appends a line per injected fault to `path`.
    pub fn with_log(mut self, path: &Path) -> std::io::Result<Faults> {
        let file = File::options().create(true).append(true).open(path)?;
        self.log = Some(Mutex::new(file));
        Ok(self)
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Scripts the next calls, one entry each: `None` lets the call through, `Some` fails it.
    /// After the script, the rate decides again.
    pub fn script(&self, calls: impl IntoIterator<Item = Option<Fault>>) {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).extend(calls);
    }

    /// Makes the next `n` calls fail before doing their work.
    pub fn fail_next(&self, n: usize) {
        self.script(std::iter::repeat_n(Some(Fault::Before), n));
    }

    /// Makes the next `n` calls fail after their work committed.
    pub fn fail_next_after_commit(&self, n: usize) {
        self.script(std::iter::repeat_n(Some(Fault::After), n));
    }

    /// Faults injected so far: (before, after commit).
    pub fn counts(&self) -> (u64, u64) {
        (self.before.load(Ordering::Relaxed), self.after.load(Ordering::Relaxed))
    }

    /// Decides whether this call fails, and when.
    pub(crate) fn draw(&self) -> Option<Fault> {
        if let Some(scripted) = self.script.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
            scripted
        } else {
            let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
            let mut rng = rand::rng();
            (rate > 0.0 && rng.random_bool(rate))
                .then(|| if rng.random_bool(0.5) { Fault::Before } else { Fault::After })
        }
    }

    /// Counts and logs a fault that was injected; returns the error the caller sees.
    pub(crate) fn strike(&self, fault: Fault) -> crate::ports::StoreError {
        match fault {
            Fault::Before => self.before.fetch_add(1, Ordering::Relaxed),
            Fault::After => self.after.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(log) = &self.log {
            let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.write_all(format!("{} {}\n", self.what, fault.as_str()).as_bytes());
        }
        crate::ports::StoreError::Unavailable(format!("injected {} fault ({})", self.what, fault.as_str()))
    }
}

/// Counts of a fault log written by [`Faults::with_log`]: `(what, when) → n`.
pub fn read_fault_log(path: &Path) -> std::io::Result<std::collections::BTreeMap<(String, String), u64>> {
    let mut out = std::collections::BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for line in text.lines() {
        if let Some((what, when)) = line.split_once(' ') {
            *out.entry((what.to_string(), when.to_string())).or_insert(0) += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_decides_the_share_and_both_kinds_occur() {
        let f = Faults::new("store", 0.5);
        let n = 4000;
        let hits: Vec<Fault> = (0..n).filter_map(|_| f.draw()).collect();
        let share = hits.len() as f64 / n as f64;
        assert!((0.45..0.55).contains(&share), "{share}");
        assert!(hits.contains(&Fault::Before) && hits.contains(&Fault::After));
        let none = Faults::new("store", 0.0);
        assert!((0..1000).all(|_| none.draw().is_none()), "a zero rate never fails");
    }

    #[test]
    fn scripted_faults_come_first_and_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("faults.log");
        let f = Faults::new("queue", 0.0).with_log(&log).unwrap();
        f.fail_next(2);
        f.fail_next_after_commit(1);
        f.script([None, Some(Fault::After)]);
        let drawn: Vec<_> = (0..6).map(|_| f.draw()).collect();
        assert_eq!(
            drawn,
            [Some(Fault::Before), Some(Fault::Before), Some(Fault::After), None, Some(Fault::After), None]
        );
        for d in drawn.into_iter().flatten() {
            f.strike(d);
        }
        assert_eq!(f.counts(), (2, 2));
        let counted = read_fault_log(&log).unwrap();
        assert_eq!(counted.get(&("queue".into(), "before".into())), Some(&2));
        assert_eq!(counted.get(&("queue".into(), "after-commit".into())), Some(&2));
    }
}
