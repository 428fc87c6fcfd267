//! The machine's limits, measured on the same file in the same run as the clients:
//!
//! * the **md5 bound**: the file's md5 in one thread, 1 MiB reads into a buffer on a cache
//!   line, with the core's hasher: the clients' own md5 pass ([`Source::md5_hex`]). An md5
//!   is one serial stream, so no upload that sends it can beat this.
//! * the **transport bound**: the file as the body of one HTTP/1.1 POST over loopback, copied
//!   from the file by the kernel where it can (`std::io::copy`), into a sink thread that reads
//!   1 MiB at a time (into a buffer on a cache line) and throws the bytes away. No multipart, no parsing, no disk writes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;

use uploads_client_io::Source;
use uploads_core::buffer::AlignedBuffer;

/// Bytes per read of the transport bound's sink (the md5 bound reads as the clients do).
const READ_BYTES: usize = 1024 * 1024;

/// The md5 of a file and how long it took.
#[derive(Debug)]
pub struct HashedFile {
    /// Time from open to digest.
    pub elapsed: Duration,
    /// The digest in lower-case hex.
    pub md5_hex: String,
}

/// Hashes the whole file in one thread, as the clients' md5 pass does.
pub fn md5_of_file(path: &Path) -> io::Result<HashedFile> {
    let started = Instant::now();
    let opened = Source::open_file(path)?;
    let md5_hex = opened.source.md5_hex(&AtomicBool::new(false))?;
    Ok(HashedFile {
        elapsed: started.elapsed(),
        md5_hex,
    })
}

/// POSTs the whole file over loopback to a sink thread; returns the time from connect to
/// the sink's answer, once the sink has counted every byte.
pub fn post_over_loopback(path: &Path) -> io::Result<Duration> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let address = listener.local_addr()?;
    let sink = thread::spawn(move || -> io::Result<u64> {
        let (stream, _) = listener.accept()?;
        receive(stream)
    });
    let started = Instant::now();
    let sent = post(address, path);
    let elapsed = started.elapsed();
    if sent.is_err() {
        // A sender that never connected leaves the sink waiting in accept: wake it (it then
        // sees an empty request). One that did connect has closed its end, which ends it.
        let _ = TcpStream::connect(address);
    }
    let received = sink
        .join()
        .map_err(|_| io::Error::other("the sink thread panicked"))?;
    let sent = sent?;
    let received = received?;
    if received != sent {
        return Err(io::Error::other(format!(
            "sent {sent} bytes but the sink received {received}"
        )));
    }
    Ok(elapsed)
}

/// Sends the file as one POST and waits for the answer; returns the body's length.
fn post(address: SocketAddr, path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut stream = TcpStream::connect(address)?;
    write!(
        stream,
        "POST /sink HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {len}\r\n\r\n"
    )?;
    let copied = io::copy(&mut file, &mut stream)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "the file changed: copied {copied} of {len} bytes"
        )));
    }
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("the sink answered {status:?}")));
    }
    Ok(len)
}

/// Reads one request's head and exactly `content-length` body bytes, answers 200, and
/// returns how many body bytes came.
fn receive(stream: TcpStream) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(READ_BYTES, stream);
    let mut content_length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse::<u64>().ok();
        }
    }
    let expected = content_length
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    // What came with the head is counted; the rest is read straight from the socket.
    let mut received = (reader.buffer().len() as u64).min(expected);
    let mut stream = reader.into_inner();
    let mut buffer = AlignedBuffer::zeroed(READ_BYTES);
    while received < expected {
        let want = buffer.len().min((expected - received) as usize);
        let read = stream.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        received += read as u64;
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("xtask-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn the_md5_bound_hashes_the_whole_file() {
        let bytes: Vec<u8> = (0..3 * READ_BYTES + 7).map(|i| (i % 251) as u8).collect();
        let path = temp_file("md5", &bytes);
        let mut expected = uploads_core::digest::Md5Hasher::new();
        expected.update(&bytes);
        assert_eq!(md5_of_file(&path).unwrap().md5_hex, expected.finish_hex());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_transport_bound_delivers_every_byte_and_reads_the_answer() {
        let path = temp_file("post", &vec![7; 2 * READ_BYTES + 3]);
        assert!(post_over_loopback(&path).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_sink_counts_exactly_the_declared_body() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let sink = thread::spawn(move || receive(listener.accept().unwrap().0));
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).unwrap();
        assert_eq!(answer, "HTTP/1.1 200 OK\r\n");
        assert_eq!(sink.join().unwrap().unwrap(), 5);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let sink = thread::spawn(move || receive(listener.accept().unwrap().0));
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort")
            .unwrap();
        drop(stream);
        let error = sink.join().unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
