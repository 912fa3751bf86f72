//! The plugin's heap: freed small blocks kept by size class in front of
//! Talc, so the allocations every hook call makes (each string the host
//! passes in, the session's JSON text) cost a list push and pop instead of
//! Talc's binning (`docs/decisions.md`).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Size classes: 16-byte steps up to 256, then 128-byte steps up to 1 KiB.
const CLASSES: usize = 22;
/// The largest block a class serves; larger ones go to the inner allocator.
const MOST: usize = 1024;
/// The alignment every class block has; a stricter one goes to the inner allocator.
const ALIGN: usize = 16;
/// Freed blocks kept per class; past it a block goes back to the inner
/// allocator, so at most about 140 KiB stays cached.
const KEEP: u16 = 64;

fn class(size: usize) -> usize {
    if size <= 256 { size.max(1).div_ceil(16) - 1 } else { 16 + (size - 257) / 128 }
}

fn class_size(c: usize) -> usize {
    if c < 16 { (c + 1) * 16 } else { 256 + (c - 15) * 128 }
}

/// A free list per size class over `A`. Not thread-safe: the global
/// allocator of a component without threads only.
pub struct Classes<A> {
    inner: A,
    /// Each class's first free block (its first word links the next) and
    /// how many are kept.
    free: UnsafeCell<[(*mut u8, u16); CLASSES]>,
}

// A component without threads never shares it.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Classes<A> {}

impl<A> Classes<A> {
    pub const fn new(inner: A) -> Self {
        Self { inner, free: UnsafeCell::new([(ptr::null_mut(), 0); CLASSES]) }
    }
}

/// The class serving `layout`, if one does.
fn served(layout: Layout) -> Option<usize> {
    (layout.size() <= MOST && layout.align() <= ALIGN).then(|| class(layout.size()))
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Classes<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = served(layout) else { return unsafe { self.inner.alloc(layout) } };
        let slot = unsafe { &mut (*self.free.get())[c] };
        if slot.0.is_null() {
            return unsafe { self.inner.alloc(Layout::from_size_align_unchecked(class_size(c), ALIGN)) };
        }
        let block = slot.0;
        slot.0 = unsafe { block.cast::<*mut u8>().read() };
        slot.1 -= 1;
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = served(layout) else { return unsafe { self.inner.dealloc(block, layout) } };
        let slot = unsafe { &mut (*self.free.get())[c] };
        if slot.1 >= KEEP {
            return unsafe { self.inner.dealloc(block, Layout::from_size_align_unchecked(class_size(c), ALIGN)) };
        }
        unsafe { block.cast::<*mut u8>().write(slot.0) };
        *slot = (block, slot.1 + 1);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (served(layout), served(new)) {
            (Some(a), Some(b)) if a == b => block,
            (None, None) => unsafe { self.inner.realloc(block, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    unsafe { ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size)) };
                    unsafe { self.dealloc(block, layout) };
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::alloc::System;

    #[test]
    fn every_size_up_to_the_largest_class_fits_its_class() {
        let mut last = 0;
        for size in 1..=MOST {
            let c = class(size);
            assert!(c < CLASSES && size <= class_size(c), "size {size} in class {c} of {}", class_size(c));
            assert!(c == 0 || size > class_size(c - 1), "size {size} fits a smaller class than {c}");
            assert!(c >= last);
            last = c;
        }
        assert_eq!(class_size(CLASSES - 1), MOST);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize, usize),
        Free(usize),
        Grow(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..2000, 0usize..6).prop_map(|(s, a)| Op::Alloc(s, 1 << a)),
            any::<usize>().prop_map(Op::Free),
            (any::<usize>(), 1usize..2000).prop_map(|(i, s)| Op::Grow(i, s)),
        ]
    }

    proptest! {
        /// Any sequence of allocations, frees and reallocations gives
        /// aligned blocks that never overlap and keep their bytes.
        #[test]
        fn blocks_are_aligned_disjoint_and_keep_their_bytes(ops in proptest::collection::vec(op(), 1..300)) {
            let heap = Classes::new(System);
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                let fill = n as u8;
                match op {
                    Op::Alloc(size, align) => {
                        let layout = Layout::from_size_align(size, align).unwrap();
                        let p = unsafe { heap.alloc(layout) };
                        prop_assert!(!p.is_null());
                        prop_assert_eq!(p as usize % align, 0);
                        unsafe { p.write_bytes(fill, size) };
                        live.push((p, layout, fill));
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (p, layout, _) = live.swap_remove(i % live.len());
                        unsafe { heap.dealloc(p, layout) };
                    }
                    Op::Grow(i, size) if !live.is_empty() => {
                        let i = i % live.len();
                        let (p, layout, old) = live[i];
                        let q = unsafe { heap.realloc(p, layout, size) };
                        prop_assert!(!q.is_null());
                        let kept = unsafe { std::slice::from_raw_parts(q, layout.size().min(size)) };
                        prop_assert!(kept.iter().all(|b| *b == old), "realloc lost bytes");
                        unsafe { q.write_bytes(fill, size) };
                        live[i] = (q, Layout::from_size_align(size, layout.align()).unwrap(), fill);
                    }
                    _ => {}
                }
                for (p, layout, fill) in &live {
                    let bytes = unsafe { std::slice::from_raw_parts(*p, layout.size()) };
                    prop_assert!(bytes.iter().all(|b| b == fill), "a block's bytes changed");
                }
                let mut spans: Vec<(usize, usize)> = live.iter().map(|(p, l, _)| (*p as usize, *p as usize + l.size())).collect();
                spans.sort();
                prop_assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "blocks overlap");
            }
            for (p, layout, _) in live {
                unsafe { heap.dealloc(p, layout) };
            }
        }
    }
}
