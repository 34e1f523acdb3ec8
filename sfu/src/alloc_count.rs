//! A counting global allocator for the sfu's own tests: it counts the
//! allocations made on the current thread while counting is on, except
//! inside str0m (the core marks every call into it, see `core::guarded`),
//! so a test can prove the packet path allocates nothing of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static IN_STR0M: Cell<u32> = const { Cell::new(0) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// The allocator (installed for the sfu's unit tests in `lib.rs`).
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only `const`-initialised thread-locals, which never
// allocate (and are skipped if already torn down).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    let in_str0m = IN_STR0M.try_with(Cell::get).unwrap_or(0) > 0;
    if counting && !in_str0m {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

/// Runs `f` as str0m's own work: its allocations are not counted.
pub fn in_str0m<T>(f: impl FnOnce() -> T) -> T {
    IN_STR0M.with(|z| z.set(z.get() + 1));
    let result = f();
    IN_STR0M.with(|z| z.set(z.get() - 1));
    result
}

/// Runs `f`, counting the allocations made outside str0m; returns both.
pub fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = COUNT.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, COUNT.with(Cell::get) - before)
}
