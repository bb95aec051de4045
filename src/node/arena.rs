//! Owned byte buffers cut from one large allocation.
//!
//! `rtc` takes packets and datagrams as owned `Bytes`/`BytesMut`, so a buffer per packet would
//! mean an allocation per packet. Copies cut from a shared chunk cost a `memcpy` and, once per
//! chunk, one allocation; a chunk is freed when the last buffer cut from it is dropped.

use bytes::BytesMut;

#[derive(Debug)]
pub struct Arena {
    buffer: BytesMut,
    chunk: usize,
}

/// A clone is a fresh arena of the same chunk size: buffers are not shared between owners.
impl Clone for Arena {
    fn clone(&self) -> Self {
        Arena::new(self.chunk)
    }
}

impl Arena {
    /// An arena that allocates `chunk` bytes at a time (more for a copy larger than that),
    /// the first on its first copy.
    pub fn new(chunk: usize) -> Self {
        Arena {
            buffer: BytesMut::new(),
            chunk,
        }
    }

    /// An owned copy of `bytes` that shares the arena's current chunk.
    pub fn copy(&mut self, bytes: &[u8]) -> BytesMut {
        if self.buffer.capacity() - self.buffer.len() < bytes.len() {
            self.buffer.reserve(self.chunk.max(bytes.len()));
        }
        self.buffer.extend_from_slice(bytes);
        self.buffer.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_independent_and_equal_to_their_source() {
        let mut arena = Arena::new(16);
        let mut a = arena.copy(b"0123456789");
        let b = arena.copy(b"abcdefghij"); // crosses into a second chunk
        let c = arena.copy(&[7u8; 40]); // larger than a chunk
        a[0] = b'X';
        assert_eq!(&a[..], b"X123456789");
        assert_eq!(&b[..], b"abcdefghij");
        assert_eq!(&c[..], &[7u8; 40][..]);
    }
}
