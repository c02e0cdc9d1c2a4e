//! This instance's counters on the key-value store (see `crate::tally`): added up
//! in memory and written as one record, one write at a time. A request that ends
//! writes its counts before it answers unless a write is under way; whatever a
//! write could not include is written by a background writer that gathers
//! counts for [`GATHER`] between writes, so under load one write carries many
//! requests and the store is not hammered. Writers run inside requests' own
//! tasks, which the instance cannot outlive, so whatever was added is written
//! before Spin drops the instance: the memory is a write-behind buffer, never
//! the only copy.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use spin_sdk::wasip3::clocks::monotonic_clock;

use super::key_value::{random_name, Failed, Handles};
use super::now_ms;
use crate::tally::{self, Record};

#[derive(Default)]
struct Tally {
    record: Record,
    /// The slot this instance writes, once taken.
    slot: Option<String>,
    /// Added since the last write began.
    dirty: bool,
    /// A write is under way.
    writing: bool,
    /// A background writer is waiting to write what comes in meanwhile.
    sleeper: bool,
    /// Writes that failed, for the next log line.
    errors: u32,
}

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally::default());
}

/// How long a background writer lets counts gather before it writes them: under
/// load one write then carries many requests' counts.
const GATHER: Duration = Duration::from_millis(50);

/// Adds a request's increments and writes them before the request answers,
/// unless a write is under way (which a background writer then follows up),
/// so a scrape after an answer sees it.
pub async fn add_and_write(store: &Rc<Handles>, increments: BTreeMap<String, i64>) {
    let write_now = TALLY.with_borrow_mut(|t| {
        add(t, &increments);
        !std::mem::replace(&mut t.writing, true)
    });
    if write_now {
        write_once(store).await;
    }
    follow_up(store);
}

/// Adds increments (a request's start) and has them written within [`GATHER`].
pub fn add_in_background(store: &Rc<Handles>, increments: BTreeMap<String, i64>) {
    TALLY.with_borrow_mut(|t| add(t, &increments));
    follow_up(store);
}

fn add(t: &mut Tally, increments: &BTreeMap<String, i64>) {
    for (series, delta) in increments {
        t.record.add(series, *delta);
    }
    t.dirty = true;
}

/// Starts a background writer if counts wait unwritten and none is waiting.
fn follow_up(store: &Rc<Handles>) {
    let start = TALLY.with_borrow_mut(|t| t.dirty && !std::mem::replace(&mut t.sleeper, true));
    if start {
        spin_sdk::wasip3::spawn(write_in_background(store.clone()));
    }
}

/// Failed writes since the last call (they never fail a request).
pub fn take_errors() -> u32 {
    TALLY.with_borrow_mut(|t| std::mem::take(&mut t.errors))
}

/// Every [`GATHER`], writes what came in, until a round finds nothing new. It
/// runs in the task of the request that started it, which the instance outlives.
async fn write_in_background(store: Rc<Handles>) {
    loop {
        monotonic_clock::wait_for(GATHER.as_nanos() as u64).await;
        let write_now = TALLY.with_borrow_mut(|t| {
            if !t.dirty {
                t.sleeper = false;
                return None;
            }
            Some(!std::mem::replace(&mut t.writing, true))
        });
        match write_now {
            None => return,
            Some(true) => write_once(&store).await,
            Some(false) => {} // another write is under way: look again later
        }
    }
}

/// One write of the whole record (the caller holds `writing`); an instance's
/// first is made by [`take_slot`]. A failure leaves the totals dirty for the
/// next writer.
async fn write_once(store: &Handles) {
    let written = match TALLY.with_borrow(|t| t.slot.clone()) {
        Some(slot) => store.set(&slot, &snapshot()).await,
        None => take_slot(store).await,
    };
    TALLY.with_borrow_mut(|t| {
        if written.is_err() {
            t.errors += 1;
            t.dirty = true;
        }
        t.writing = false;
    });
}

/// The whole record as it stands, to be written now.
fn snapshot() -> Vec<u8> {
    TALLY.with_borrow_mut(|t| {
        t.dirty = false;
        t.record.at = now_ms();
        t.record.encode()
    })
}

/// Takes a free slot of the ring, chosen at random, absorbs the counters of
/// the gone instance that held it, and writes the first record there. A slot whose record is recent may still be
/// someone's: another is tried. Instances that pick the same free slot at once
/// settle it with a split on the slot's present state, and the winner writes its
/// record before it clears the split, so a latecomer who wins the cleared split
/// finds the slot changed and tries another.
async fn take_slot(store: &Handles) -> Result<(), Failed> {
    let me = random_name();
    for _ in 0..4 {
        let slot = tally::slot_key(spin_sdk::wasip3::random::random::get_random_u64());
        let found = store.get(&slot).await?;
        let previous = found.as_deref().and_then(Record::decode);
        if previous.as_ref().is_some_and(|r| r.is_live(now_ms())) {
            continue;
        }
        let claim = tally::claim_key(&slot, previous.as_ref().map_or(0, |r| r.at));
        if !store.split(&claim, &me).await? || store.get(&slot).await? != found {
            continue;
        }
        TALLY.with_borrow_mut(|t| {
            if let Some(gone) = &previous {
                t.record.absorb(gone);
            }
            t.slot = Some(slot.clone());
        });
        store.set(&slot, &snapshot()).await?;
        return store.reset_split(&claim).await;
    }
    Err(Failed)
}
