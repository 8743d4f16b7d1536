//! Memory after the image: a small heap for the driver's bookkeeping (`alloc`), and the rest
//! as the DMA window for rings and mbufs. Both are bump allocators: the application
//! allocates once at start-up and never frees what matters.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

/// Bytes of RAM given to `alloc`; the rest is DMA memory.
const HEAP_SIZE: u64 = 4 << 20;

static NEXT: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static DMA: AtomicU64 = AtomicU64::new(0);
static DMA_END: AtomicU64 = AtomicU64::new(0);

/// Splits free RAM [start, end) between the heap and the DMA window.
pub fn init(start: u64, end: u64) {
    let heap_end = (start + HEAP_SIZE).min(end);
    NEXT.store(start, Ordering::Relaxed);
    END.store(heap_end, Ordering::Relaxed);
    DMA.store(heap_end, Ordering::Relaxed);
    DMA_END.store(end, Ordering::Relaxed);
}

/// The DMA window, [start, end).
pub fn dma_window() -> (u64, u64) {
    (DMA.load(Ordering::Relaxed), DMA_END.load(Ordering::Relaxed))
}

struct Bump;

// SAFETY: `alloc` returns disjoint, aligned blocks of identity-mapped RAM that nothing else
// uses (the DMA window starts where the heap ends), or null when exhausted.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = layout.align() as u64;
        let mut cur = NEXT.load(Ordering::Relaxed);
        loop {
            let start = (cur + align - 1) & !(align - 1);
            let end = start + layout.size() as u64;
            if end > END.load(Ordering::Relaxed) {
                return core::ptr::null_mut();
            }
            match NEXT.compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return start as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {
        // A bump allocator frees nothing; the application's allocations are bounded.
    }
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;
