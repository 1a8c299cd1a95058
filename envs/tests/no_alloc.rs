//! Stepping a native env performs no heap allocation (counted by a global allocator
//! installed only in this test binary). Only the test's own thread is counted, so
//! the harness and concurrently running tests do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn native_step_and_reset_allocate_nothing() {
    for id in ["Pendulum-v1", "MountainCarContinuous-v0"] {
        let mut env = envs::make_native(id).unwrap();
        let mut obs = vec![0.0f32; env.observation_space().dim()];
        let action = vec![0.7f32; env.action_space().dim()];
        let over = vec![5.0f32; env.action_space().dim()];
        env.reset(Some(3), &mut obs).unwrap();
        let before = allocs();
        let mut steps = 0;
        for t in 0..3000 {
            let a = if t % 3 == 0 { &over } else { &action };
            let out = env.step(a, &mut obs).unwrap();
            steps += 1;
            if out.terminated || out.truncated {
                env.reset(None, &mut obs).unwrap();
            }
        }
        let after = allocs();
        assert_eq!(
            after - before,
            0,
            "{id}: {} allocations in {steps} steps",
            after - before
        );
    }
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocs();
    let v: Vec<u64> = std::hint::black_box((0..100).collect());
    assert!(allocs() > before && v.len() == 100);
}
