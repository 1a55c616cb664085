//! [`ReadBuf`]: the bounded read buffer behind a connection's `readline`,
//! `readuntil` and `readexactly` (what asyncio's `StreamReader` and Go's
//! `bufio.Reader` give), over any source that fills a byte slice: a
//! [`Conn`](super::Conn)'s `poll_recv`, or a test's fake.
//!
//! # Invariants
//!
//! - `data[start..end]` are the buffered bytes, received but not yet
//!   returned; `data` is always initialised to its full length, so a fill
//!   receives straight into `data[end..]` (one copy, out of the kernel) and
//!   a buffer reused from a pool costs no zeroing.
//! - `scanned` bytes from `start` are known not to begin a separator of
//!   the last search, so a line that arrives in many pieces is searched
//!   once overall, not once per piece. Any consume resets it.
//! - Memory is bounded by the caller's `limit`: a search never makes the
//!   buffer longer than `limit + sep.len()` bytes beyond [`CHUNK`], and
//!   `read_exact(n)` grows it only as bytes arrive, so a peer that never
//!   sends the separator, or a huge `n` read off the wire, costs at most
//!   what the peer really sent, up to the limit.
//! - Nothing is lost: an error, a timeout or a cancel between fills leaves
//!   every buffered byte in place for the next read.

use std::io;
use std::task::Poll;

/// Bytes one fill asks for at least, and the size of a fresh buffer: 64 KiB,
/// asyncio's stream limit and a socket's usual receive window, so a line
/// protocol does one `recv` per burst.
pub const CHUNK: usize = 64 * 1024;

/// A read buffer; see the module docs for its invariants.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    scanned: usize,
}

/// How a [`ReadBuf::poll_until`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Until {
    /// The first `n` buffered bytes end with the separator.
    Found(usize),
    /// The source ended (EOF) first; the buffered bytes are what came.
    Eof,
    /// No separator within `limit` bytes, or found past it: this many bytes
    /// were searched and stay buffered.
    Overrun(usize),
}

impl ReadBuf {
    /// The buffered bytes.
    pub fn buffered(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` buffered bytes (they were returned).
    pub fn consume(&mut self, n: usize) {
        assert!(
            n <= self.end - self.start,
            "consume past the buffered bytes"
        );
        self.start += n;
        self.scanned = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The storage, if nothing is buffered, for a pool to reuse: an idle
    /// connection then holds no buffer. None while bytes are buffered or
    /// none is held.
    pub fn take_storage(&mut self) -> Option<Vec<u8>> {
        if self.is_empty() && !self.data.is_empty() {
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }

    /// Whether it holds storage (buffered bytes, or a lent buffer not
    /// taken back yet).
    pub fn has_storage(&self) -> bool {
        !self.data.is_empty()
    }

    /// Gives an empty buffer storage (from a pool; any initialised length,
    /// contents ignored). Ignored while it holds storage of its own.
    pub fn give_storage(&mut self, v: Vec<u8>) {
        if self.data.is_empty() {
            debug_assert!(self.is_empty());
            self.data = v;
        }
    }

    /// Makes room for at least `want` bytes after `end`, without letting
    /// the storage grow past `cap` (or [`CHUNK`], whichever is larger):
    /// slides the buffered bytes to the front first, then grows.
    fn room(&mut self, want: usize, cap: usize) {
        if self.data.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = self.end + want;
        if self.data.len() < need {
            let grown = need
                .max(self.data.len() * 2)
                .max(CHUNK)
                .min(cap.max(CHUNK).max(need));
            self.data.resize(grown, 0);
        }
    }

    /// One fill of up to `max` more bytes (at least one) from `fill`: the
    /// number received, 0 at EOF.
    fn poll_fill(
        &mut self,
        max: usize,
        cap: usize,
        fill: &mut impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let max = max.max(1);
        self.room(max.min(CHUNK), cap);
        let spare = &mut self.data[self.end..];
        let len = spare.len().min(max);
        match fill(&mut spare[..len]) {
            Poll::Ready(Ok(k)) => {
                debug_assert!(k <= len);
                self.end += k;
                Poll::Ready(Ok(k))
            }
            other => other,
        }
    }

    /// Fills until the buffered bytes hold `sep` (not empty) within `limit`
    /// bytes before it (asyncio's `readuntil` rule: a separator starting
    /// past `limit` is an overrun too).
    pub fn poll_until(
        &mut self,
        sep: &[u8],
        limit: usize,
        mut fill: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<Until>> {
        assert!(!sep.is_empty(), "an empty separator");
        // Never hold more than a full line and its separator for the
        // search: past that it is an overrun whatever comes next.
        let cap = limit.saturating_add(sep.len());
        loop {
            if let Some(done) = self.search(sep, limit) {
                return Poll::Ready(Ok(done));
            }
            let have = self.end - self.start;
            match self.poll_fill(cap - have, cap, &mut fill) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Until::Eof)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Searches the buffered bytes from `scanned` on.
    fn search(&mut self, sep: &[u8], limit: usize) -> Option<Until> {
        let buf = &self.data[self.start..self.end];
        let from = self.scanned.min(buf.len());
        let hit = match sep {
            [b] => memchr::memchr(*b, &buf[from..]),
            _ => memchr::memmem::find(&buf[from..], sep),
        };
        match hit {
            Some(i) if from + i > limit => Some(Until::Overrun(from + i)),
            Some(i) => Some(Until::Found(from + i + sep.len())),
            None => {
                // A separator may begin in the last `sep.len() - 1` bytes.
                self.scanned = buf.len().saturating_sub(sep.len() - 1);
                (self.scanned > limit).then_some(Until::Overrun(buf.len()))
            }
        }
    }

    /// Fills until `n` bytes are buffered: true then, false at EOF before
    /// (the buffered bytes are what came). Grows only as bytes arrive.
    pub fn poll_exact(
        &mut self,
        n: usize,
        mut fill: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<bool>> {
        loop {
            let have = self.end - self.start;
            if have >= n {
                return Poll::Ready(Ok(true));
            }
            match self.poll_fill(n - have, n, &mut fill) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A source that hands out `pieces` one per fill (as much of each as
    /// fits), then `Pending` or EOF.
    struct Src {
        pieces: Vec<Vec<u8>>,
        eof: bool,
        fills: usize,
    }

    impl Src {
        fn new(pieces: &[&[u8]], eof: bool) -> Src {
            Src {
                pieces: pieces.iter().rev().map(|p| p.to_vec()).collect(),
                eof,
                fills: 0,
            }
        }

        fn fill(&mut self, out: &mut [u8]) -> Poll<io::Result<usize>> {
            self.fills += 1;
            let Some(mut p) = self.pieces.pop() else {
                return if self.eof {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            };
            let k = p.len().min(out.len());
            out[..k].copy_from_slice(&p[..k]);
            if k < p.len() {
                self.pieces.push(p.split_off(k));
            }
            Poll::Ready(Ok(k))
        }
    }

    fn until(rb: &mut ReadBuf, src: &mut Src, sep: &[u8], limit: usize) -> Poll<Until> {
        rb.poll_until(sep, limit, |b| src.fill(b))
            .map(|r| r.expect("no error"))
    }

    #[test]
    fn lines_across_pieces_and_in_one_piece() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"ab", b"c\nde", b"f\ng\n"], false);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 100),
            Poll::Ready(Until::Found(4))
        );
        assert_eq!(&rb.buffered()[..4], b"abc\n");
        rb.consume(4);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 100),
            Poll::Ready(Until::Found(4))
        );
        assert_eq!(&rb.buffered()[..4], b"def\n");
        rb.consume(4);
        // "g\n" is buffered already: no fill.
        let fills = src.fills;
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 100),
            Poll::Ready(Until::Found(2))
        );
        assert_eq!(src.fills, fills);
        rb.consume(2);
        assert!(rb.is_empty());
        assert_eq!(until(&mut rb, &mut src, b"\n", 100), Poll::Pending);
    }

    #[test]
    fn a_multibyte_separator_split_between_pieces() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"head\r", b"\nbody"], false);
        assert_eq!(
            until(&mut rb, &mut src, b"\r\n", 100),
            Poll::Ready(Until::Found(6))
        );
        assert_eq!(&rb.buffered()[..6], b"head\r\n");
    }

    #[test]
    fn eof_leaves_the_partial_line_buffered() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"par", b"tial"], true);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 100),
            Poll::Ready(Until::Eof)
        );
        assert_eq!(rb.buffered(), b"partial");
    }

    #[test]
    fn overrun_is_bounded_and_keeps_the_bytes() {
        let mut rb = ReadBuf::default();
        let big = vec![b'x'; 10 * CHUNK];
        let mut src = Src::new(&[&big], false);
        let limit = 3 * CHUNK;
        let Poll::Ready(Until::Overrun(n)) = until(&mut rb, &mut src, b"\n", limit) else {
            panic!("expected an overrun");
        };
        assert!(n > limit);
        assert_eq!(rb.buffered().len(), n);
        // Never more storage than the limit and its separator, give or
        // take one chunk.
        assert!(rb.data.len() <= limit + 1 + CHUNK, "{}", rb.data.len());
        // The bytes stay: a larger limit finds the separator after them.
        let mut src2 = Src::new(&[b"tail\n"], false);
        src.pieces.clear();
        let Poll::Ready(Until::Found(m)) = until(&mut rb, &mut src2, b"\n", usize::MAX / 2) else {
            panic!("expected the line");
        };
        assert_eq!(m, n + 5);
    }

    #[test]
    fn a_separator_past_the_limit_is_an_overrun() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"abcdef\n"], false);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 5),
            Poll::Ready(Until::Overrun(6))
        );
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"abcde\n"], false);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 5),
            Poll::Ready(Until::Found(6))
        );
    }

    #[test]
    fn exact_grows_only_as_bytes_arrive() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"12345"], false);
        assert_eq!(
            rb.poll_exact(1 << 40, |b| src.fill(b)).map(|r| r.unwrap()),
            Poll::Pending
        );
        assert!(rb.data.len() <= 2 * CHUNK);
        assert_eq!(rb.buffered(), b"12345");
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"12", b"345", b"6"], true);
        assert_eq!(
            rb.poll_exact(4, |b| src.fill(b)).map(|r| r.unwrap()),
            Poll::Ready(true)
        );
        assert_eq!(&rb.buffered()[..4], b"1234");
        rb.consume(4);
        assert_eq!(
            rb.poll_exact(4, |b| src.fill(b)).map(|r| r.unwrap()),
            Poll::Ready(false)
        );
        assert_eq!(rb.buffered(), b"56");
    }

    #[test]
    fn storage_goes_to_a_pool_only_when_drained() {
        let mut rb = ReadBuf::default();
        let mut src = Src::new(&[b"a\nb"], false);
        assert_eq!(
            until(&mut rb, &mut src, b"\n", 100),
            Poll::Ready(Until::Found(2))
        );
        rb.consume(2);
        assert!(rb.take_storage().is_none(), "b is still buffered");
        rb.consume(1);
        let v = rb.take_storage().expect("drained");
        assert!(v.len() >= CHUNK);
        rb.give_storage(v);
        assert!(rb.data.len() >= CHUNK);
    }
}
