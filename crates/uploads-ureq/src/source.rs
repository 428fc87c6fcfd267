//! A part's bytes read from the source into ureq's send buffer, reporting progress as they
//! go.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use uploads_client_io::Source;
use uploads_core::buffer::{AlignedBuffer, BUFFER_ALIGN};

/// The most a part reads from the source at a time when it reads through its own buffer
/// (ureq asks for 128 KiB).
const STAGING_BYTES: usize = 128 * 1024;

/// `len` bytes of a source from `offset`, read into the transport's buffer. ureq's buffer
/// starts off a cache line, where the kernel copies several times slower (see
/// [`AlignedBuffer`]), so the bytes are read into an aligned buffer of the part's own and
/// copied across from there: a copy of cache-hot bytes is the cheaper of the two.
pub(crate) struct PartReader<'s, 'a> {
    source: &'s Source<'a>,
    offset: u64,
    remaining: u64,
    on_read: Option<&'s (dyn Fn(u64) + Sync)>,
    stop: Option<&'s AtomicBool>,
    /// Made at the first read into a buffer off a cache line.
    staging: Option<AlignedBuffer>,
    /// The source's error, kept so the sender can tell it from a network failure.
    pub(crate) failed: Option<io::Error>,
}

impl<'s, 'a> PartReader<'s, 'a> {
    /// Reads `len` bytes of `source` from `offset`, telling `on_read` as it goes, and fails
    /// once `stop` is set.
    pub(crate) fn new(
        source: &'s Source<'a>,
        offset: u64,
        len: u64,
        on_read: Option<&'s (dyn Fn(u64) + Sync)>,
        stop: Option<&'s AtomicBool>,
    ) -> Self {
        Self {
            source,
            offset,
            remaining: len,
            on_read,
            stop,
            staging: None,
            failed: None,
        }
    }
}

impl Read for PartReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            // Not `Interrupted`: readers such as `read_to_end` and `io::copy` retry that.
            return Err(io::Error::other("the part was stopped"));
        }
        let len = self.remaining.min(buf.len() as u64) as usize;
        if len == 0 {
            return Ok(0);
        }
        let read = if (buf.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN) {
            self.source
                .read_exact_at(self.offset, &mut buf[..len])
                .map(|()| len)
        } else {
            let staging = self
                .staging
                .get_or_insert_with(|| AlignedBuffer::zeroed(STAGING_BYTES));
            let len = len.min(STAGING_BYTES);
            self.source
                .read_exact_at(self.offset, &mut staging[..len])
                .map(|()| {
                    buf[..len].copy_from_slice(&staging[..len]);
                    len
                })
        };
        let len = match read {
            Ok(len) => len,
            Err(error) => {
                let stand_in = io::Error::new(error.kind(), error.to_string());
                self.failed = Some(error);
                return Err(stand_in);
            }
        };
        self.offset += len as u64;
        self.remaining -= len as u64;
        if let Some(on_read) = self.on_read {
            on_read(len as u64);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_part_reader_reads_its_range_reports_it_and_keeps_source_errors() {
        let source = Source::new(Cursor::new(b"0123456789".to_vec()), 12);
        let read = AtomicU64::new(0);
        let count = |bytes| {
            read.fetch_add(bytes, Ordering::Relaxed);
        };
        let mut part = PartReader::new(&source, 2, 5, Some(&count), None);
        let mut text = String::new();
        part.read_to_string(&mut text).unwrap();
        assert_eq!(text, "23456");
        assert_eq!(read.load(Ordering::Relaxed), 5);

        let mut short = PartReader::new(&source, 8, 4, None, None);
        let error = short.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(short.failed.unwrap().kind(), io::ErrorKind::UnexpectedEof);

        let stop = AtomicBool::new(true);
        let mut stopped = PartReader::new(&source, 0, 4, None, Some(&stop));
        let error = stopped.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "the part was stopped");
        assert!(stopped.failed.is_none());
    }

    #[test]
    fn a_part_reads_the_same_bytes_into_buffers_on_and_off_a_cache_line() {
        let data: Vec<u8> = (0..3 * STAGING_BYTES as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let source = Source::new(Cursor::new(data.clone()), data.len() as u64);
        let len = data.len() as u64 - 5;
        for shift in [0, 16] {
            let mut part = PartReader::new(&source, 5, len, None, None);
            let mut buffer = AlignedBuffer::zeroed(2 * STAGING_BYTES + shift);
            let mut received = Vec::new();
            loop {
                let read = part.read(&mut buffer[shift..]).unwrap();
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&buffer[shift..shift + read]);
            }
            assert!(received == data[5..], "shift {shift}");
            assert_eq!(part.staging.is_some(), shift != 0);
        }
    }
}
