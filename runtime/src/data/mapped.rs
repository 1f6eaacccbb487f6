//! Which file each memory map of a dataset shows, for the one fault a map can raise: a file
//! truncated while mapped makes the next read of the lost pages a SIGBUS, which no Rust code
//! can turn into an error. The binary's SIGBUS handler asks [`fault_message`] for a message
//! naming the file of the faulting address, writes it and exits 3.
//!
//! Everything here is atomics and leaked, never freed strings (one per map opened), so
//! [`fault_message`] is async-signal-safe. A map is registered while it lives.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Live maps with a named file.
pub const SLOTS: usize = 4096;

struct Slot {
    claimed: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    msg: AtomicPtr<u8>,
    msg_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    msg: AtomicPtr::new(std::ptr::null_mut()),
    msg_len: AtomicUsize::new(0),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// Records that `bytes` (a map) show the file at `path`, until [`unregister`]. Beyond
/// [`SLOTS`] live maps, the extra ones get the generic message.
pub fn register(bytes: &[u8], path: &Path) {
    let free = TABLE.iter().find(|s| {
        s.claimed
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    let Some(slot) = free else {
        return;
    };
    let text = format!(
        "error: {}: the file shrank while this process had it mapped (SIGBUS reading it); it \
         was truncated or replaced during training: restore it, or rebuild the dataset, and \
         resume\n",
        path.display()
    );
    let leaked: &'static mut str = Box::leak(text.into_boxed_str());
    slot.msg_len.store(leaked.len(), Ordering::SeqCst);
    slot.msg.store(leaked.as_mut_ptr(), Ordering::SeqCst);
    slot.len.store(bytes.len(), Ordering::SeqCst);
    slot.start.store(bytes.as_ptr() as usize, Ordering::SeqCst);
}

/// Forgets the map starting at `start` (it is being unmapped).
pub fn unregister(start: usize) {
    if let Some(slot) = TABLE
        .iter()
        .find(|s| s.claimed.load(Ordering::SeqCst) && s.start.load(Ordering::SeqCst) == start)
    {
        slot.start.store(0, Ordering::SeqCst);
        slot.claimed.store(false, Ordering::SeqCst);
    }
}

/// The message for a fault at `addr`: the file mapped there, else a generic one.
/// Async-signal-safe.
pub fn fault_message(addr: usize) -> &'static [u8] {
    for slot in &TABLE {
        let start = slot.start.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::SeqCst);
        let msg = slot.msg.load(Ordering::SeqCst);
        if start != 0 && addr >= start && addr - start < len && !msg.is_null() {
            let n = slot.msg_len.load(Ordering::SeqCst);
            // SAFETY: `msg` points at a leaked string of `n` bytes, stored before `start`
            // was (SeqCst), and never freed.
            return unsafe { std::slice::from_raw_parts(msg, n) };
        }
    }
    b"error: bus error (SIGBUS) outside any dataset file: a memory-mapped file shrank or the \
      hardware failed\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_inside_a_map_names_its_file() {
        let bytes = vec![0u8; 4096];
        register(&bytes, Path::new("/data/corpus_text_document.bin"));
        let inside = bytes.as_ptr() as usize + 100;
        let msg = String::from_utf8_lossy(fault_message(inside)).into_owned();
        assert!(
            msg.contains("/data/corpus_text_document.bin: the file shrank"),
            "{msg}"
        );
        let outside = String::from_utf8_lossy(fault_message(1)).into_owned();
        assert!(outside.contains("outside any dataset file"), "{outside}");
    }
}
