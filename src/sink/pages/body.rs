//! A page's PLAIN values, written after a gap that the page's levels go into when it is cut:
//! the page is then one buffer handed over whole, and the values are never copied to make it.

use bytes::Bytes;

/// Room kept for levels before the values at first; it grows to what a page needed.
const FIRST_GAP: usize = 1024;

#[derive(Debug)]
pub struct Body {
    buf: Vec<u8>,
    gap: usize,
}

impl Default for Body {
    fn default() -> Self {
        Self {
            buf: vec![0; FIRST_GAP],
            gap: FIRST_GAP,
        }
    }
}

impl Body {
    /// Appends `v` PLAIN: its 4-byte little-endian length, then its bytes.
    pub fn push(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(v);
    }

    /// Appends `v`'s bytes alone (DELTA_LENGTH_BYTE_ARRAY keeps the lengths apart).
    pub fn push_bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Bytes of values so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.gap
    }

    /// The values so far.
    fn values(&self) -> &[u8] {
        &self.buf[self.gap..]
    }

    /// The page: `levels`, then the values; the body starts over empty. The values are copied
    /// only when `levels` do not fit the gap, which then grows for the next pages.
    pub fn take(&mut self, levels: &[u8]) -> Bytes {
        let cap = self.buf.capacity();
        if levels.len() <= self.gap {
            let start = self.gap - levels.len();
            self.buf[start..self.gap].copy_from_slice(levels);
            let mut next = Vec::with_capacity(cap);
            next.resize(self.gap, 0);
            let full = std::mem::replace(&mut self.buf, next);
            return Bytes::from(full).slice(start..);
        }
        let mut page = Vec::with_capacity(levels.len() + self.len());
        page.extend_from_slice(levels);
        page.extend_from_slice(self.values());
        self.gap = levels.len().next_power_of_two();
        self.buf.clear();
        self.buf.resize(self.gap, 0);
        Bytes::from(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_levels_then_values_whatever_the_levels_length() {
        let mut b = Body::default();
        for round in 0..3 {
            b.push(b"ab");
            b.push(b"");
            let levels = vec![7u8; [10, 5000, 3000][round]];
            let page = b.take(&levels);
            let mut want = levels.clone();
            want.extend_from_slice(&[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
            assert_eq!(&page[..], &want[..], "round {round}");
            assert_eq!(b.len(), 0);
        }
        assert!(b.gap >= 5000, "the gap grew to the longest levels");
    }
}
