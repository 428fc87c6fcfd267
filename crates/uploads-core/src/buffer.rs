//! The buffers drivers read bytes into: on a cache line, and lent out again once sent.
//!
//! Where a buffer starts decides what a read into it costs. On this project's machines (AMD
//! EPYC, Linux 6.18) the kernel copied 2 GiB from the page cache into a buffer 16 bytes past
//! a cache line in 1.38 s of system time, and into one on a cache line in 0.35 s. A large
//! `Vec<u8>` from the system allocator starts 16 bytes past a page (the allocator's header),
//! so every read into one pays the slow copy. And a fresh buffer per chunk costs an
//! allocation, zeroing and page faults that reusing one does not.
//!
//! Nothing here does I/O: a driver reads into the buffers.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Where every [`AlignedBuffer`] starts: a multiple of this many bytes (a cache line).
pub const BUFFER_ALIGN: usize = 64;

/// A zeroed byte buffer of a fixed length whose first byte sits on a cache line.
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// `len` zero bytes, starting on a cache line.
    pub fn zeroed(len: usize) -> Self {
        let storage = vec![0; len + BUFFER_ALIGN];
        // The allocation never moves (its length never changes), so the offset holds.
        let start = storage.as_ptr().align_offset(BUFFER_ALIGN);
        Self {
            storage,
            start,
            len,
        }
    }
}

impl Deref for AlignedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Buffers of one size, each filled by a read and lent out as [`Bytes`]; a buffer comes
/// back to the pool when the last clone of its `Bytes` is dropped (the transport has sent
/// it), so a stream of chunks reuses a few buffers instead of allocating one per chunk.
/// Clones share the pool.
#[derive(Clone)]
pub struct BufferPool {
    buffer_len: usize,
    max_idle: usize,
    idle: Arc<Mutex<Vec<AlignedBuffer>>>,
}

impl BufferPool {
    /// A pool of `buffer_len`-byte buffers that keeps at most `max_idle` of them unused
    /// (more are freed); it holds none until the first fill.
    pub fn new(buffer_len: usize, max_idle: usize) -> Self {
        Self {
            buffer_len,
            max_idle,
            idle: Arc::default(),
        }
    }

    /// The length of every buffer, the most one chunk holds.
    pub fn buffer_len(&self) -> usize {
        self.buffer_len
    }

    /// A chunk of the bytes `read` puts at the start of a pooled buffer: `read` is given the
    /// whole buffer and returns how many bytes it filled (clamped to the buffer's length).
    /// A failed read gives the buffer back.
    pub fn fill<E>(&self, read: impl FnOnce(&mut [u8]) -> Result<usize, E>) -> Result<Bytes, E> {
        let mut buffer = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| AlignedBuffer::zeroed(self.buffer_len));
        match read(&mut buffer) {
            Ok(filled) => Ok(Bytes::from_owner(Lent {
                len: filled.min(buffer.len()),
                buffer: Some(buffer),
                pool: self.clone(),
            })),
            Err(error) => {
                self.give_back(buffer);
                Err(error)
            }
        }
    }

    fn give_back(&self, buffer: AlignedBuffer) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(buffer);
        }
    }
}

/// A pooled buffer lent out as the first `len` bytes of a chunk.
struct Lent {
    buffer: Option<AlignedBuffer>,
    len: usize,
    pool: BufferPool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .map_or(&[], |buffer| &buffer[..self.len])
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_of_any_length_start_on_a_cache_line_and_hold_their_length() {
        for len in [0, 1, 63, 64, 4096, 1 << 20, (1 << 20) + 5] {
            let mut buffer = AlignedBuffer::zeroed(len);
            assert!(
                (buffer.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN),
                "len {len}"
            );
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&byte| byte == 0));
            buffer.fill(7);
            assert!(buffer.iter().all(|&byte| byte == 7));
        }
    }

    #[test]
    fn a_chunk_once_dropped_lends_its_buffer_to_the_next_and_a_chunk_in_use_is_untouched() {
        let pool = BufferPool::new(1 << 20, 4);
        let fill_with = |byte: u8, len: usize| {
            pool.fill(|buffer: &mut [u8]| {
                buffer[..len].fill(byte);
                Ok::<_, ()>(len)
            })
            .unwrap()
        };
        let first = fill_with(1, 1 << 20);
        let held = fill_with(2, 10);
        assert!((first.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN));
        let first_buffer = first.as_ptr();
        drop(first);
        let second = fill_with(3, 100);
        assert_eq!(
            second.as_ptr(),
            first_buffer,
            "the dropped chunk's buffer is reused"
        );
        assert_eq!(second.as_ref(), [3; 100]);
        assert_eq!(held.as_ref(), [2; 10], "a chunk in use is untouched");
    }

    #[test]
    fn a_failed_read_gives_its_buffer_back_and_the_pool_keeps_at_most_max_idle() {
        let pool = BufferPool::new(64, 1);
        let failed = pool.fill(|buffer: &mut [u8]| Err::<usize, _>(buffer.as_ptr() as usize));
        let failed_buffer = failed.unwrap_err();
        let next = pool.fill(|_: &mut [u8]| Ok::<_, ()>(200)).unwrap();
        assert_eq!(next.as_ptr() as usize, failed_buffer);
        assert_eq!(next.len(), 64, "a fill is clamped to the buffer");
        let other = pool.fill(|_: &mut [u8]| Ok::<_, ()>(1)).unwrap();
        drop(next);
        drop(other);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }
}
