//! The shared profile's HTTP/1.1 client: one keep-alive connection per sender, requests
//! built by the core ([`uploads_core::api::ClientConfig`]) and answers handed back as an
//! `http::Response<Vec<u8>>` for the core's parsers.
//!
//! Only what a bench against our own server on loopback needs: no TLS, proxies, redirects or
//! retries. It exists so that the bench can time what `uploads put` cannot report: one
//! request's own latency, and the gap between the last Part's answer and the complete's.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use uploads_core::http::{Request, Response, StatusCode};

/// How long one answer may take (a hang guard, not a measurement).
const READ_TIMEOUT: Duration = Duration::from_mins(10);
/// Bodies up to this size go out in one write with the head.
const ONE_WRITE_BYTES: usize = 64 * 1024;

/// One HTTP/1.1 connection to the server, opened when first needed and again after the
/// server closed it.
pub struct Connection {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    /// A connection to `addr`, not yet open.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// Opens the connection unless it is open and the server has not closed it, so that a
    /// timed exchange does not include the connect.
    pub fn ready(&mut self) -> io::Result<()> {
        if let Some(stream) = &self.stream
            && !closed_by_peer(stream.get_ref())
        {
            return Ok(());
        }
        let stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        self.stream = Some(BufReader::new(stream));
        Ok(())
    }

    /// Sends `request`'s head and then `body` (the slices in order, `Content-Length` of them
    /// all unless the request says otherwise), and reads the whole answer.
    ///
    /// After an answer that is not a success the connection is closed: the server may answer
    /// a refused request before reading its body, and then close.
    pub fn exchange<B>(
        &mut self,
        request: &Request<B>,
        body: &[&[u8]],
    ) -> io::Result<Response<Vec<u8>>> {
        self.ready()?;
        let body_len: usize = body.iter().map(|slice| slice.len()).sum();
        let mut out = request_head(request, body_len);
        let stream = self.stream.as_mut().ok_or_else(not_connected)?;
        if body_len <= ONE_WRITE_BYTES {
            for slice in body {
                out.extend_from_slice(slice);
            }
            stream.get_mut().write_all(&out)?;
        } else {
            stream.get_mut().write_all(&out)?;
            for slice in body {
                stream.get_mut().write_all(slice)?;
            }
        }
        let answer = read_response(stream);
        let keep = answer
            .as_ref()
            .is_ok_and(|(response, close)| response.status().is_success() && !close);
        if !keep {
            self.stream = None;
        }
        answer.map(|(response, _)| response)
    }
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "not connected")
}

/// Whether the server has closed an idle connection (a read would see its end or an error).
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0; 1];
    let closed =
        !matches!(stream.peek(&mut byte), Err(error) if error.kind() == io::ErrorKind::WouldBlock);
    closed || stream.set_nonblocking(false).is_err()
}

/// The request line and headers, with `Host` and `Content-Length` added when missing.
fn request_head<B>(request: &Request<B>, body_len: usize) -> Vec<u8> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method()).into_bytes();
    let headers = request.headers();
    if !headers.contains_key("host")
        && let Some(authority) = uri.authority()
    {
        head.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    if !headers.contains_key("content-length") {
        head.extend_from_slice(format!("content-length: {body_len}\r\n").as_bytes());
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads one answer: the head, then a body by `Content-Length`, chunked, or to the end.
/// Also says whether the server will close the connection.
fn read_response(reader: &mut impl BufRead) -> io::Result<(Response<Vec<u8>>, bool)> {
    let status_line = read_line(reader)?;
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid(format!("not an HTTP/1.1 status line: {status_line:?}")))?;
    let mut response = Response::builder().status(code);
    let (mut content_length, mut chunked, mut close) = (None, false, false);
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("not a header line: {line:?}")))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("bad content-length {value:?}")))?,
                );
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
        response = response.header(name, value);
    }
    let no_body = code.is_informational()
        || code == StatusCode::NO_CONTENT
        || code == StatusCode::NOT_MODIFIED;
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(reader)?
    } else if let Some(length) = content_length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    } else {
        close = true;
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    let response = response
        .body(body)
        .map_err(|error| invalid(format!("unusable answer head: {error}")))?;
    Ok((response, close))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the blank line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("a chunk longer than its size".to_owned()));
        }
    }
}

/// One line without its CRLF; the end of the stream before it is an error.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection before answering",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};
    use std::net::{Ipv4Addr, TcpListener};
    use std::thread;

    use super::*;

    fn read(bytes: &[u8]) -> (u16, Vec<u8>, bool) {
        let (response, close) = read_response(&mut Cursor::new(bytes.to_vec())).unwrap();
        (response.status().as_u16(), response.into_body(), close)
    }

    #[test]
    fn answers_are_read_by_length_by_chunks_or_to_the_end() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: x\r\n\r\n{}extra"),
            (200, b"{}".to_vec(), false)
        );
        assert_eq!(
            read(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n"),
            (400, b"abcde".to_vec(), true)
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\n\r\nall of it"),
            (200, b"all of it".to_vec(), true)
        );
        assert_eq!(
            read(b"HTTP/1.1 204 No Content\r\n\r\n"),
            (204, Vec::new(), false)
        );
        for broken in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc"[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"",
        ] {
            assert!(read_response(&mut Cursor::new(broken.to_vec())).is_err());
        }
    }

    #[test]
    fn a_request_goes_out_with_host_and_length_and_its_body_in_order() {
        let request = Request::post("http://127.0.0.1:9/v1/uploads/upload_1/parts")
            .header("x-uploads-part-index", "3")
            .body(())
            .unwrap();
        assert_eq!(
            String::from_utf8(request_head(&request, 7)).unwrap(),
            "POST /v1/uploads/upload_1/parts HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\
             content-length: 7\r\nx-uploads-part-index: 3\r\n\r\n"
        );
    }

    /// A server that answers two requests on one connection, then a refusal and closes:
    /// the client reuses the connection, and opens a new one after the refusal.
    #[test]
    fn the_connection_is_kept_after_a_success_and_renewed_after_a_refusal() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut accepted = 0;
            for stream in listener.incoming().take(2) {
                accepted += 1;
                let mut reader = BufReader::new(stream.unwrap());
                let answers: &[&[u8]] = if accepted == 1 {
                    &[
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",
                    ]
                } else {
                    &[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain"]
                };
                for answer in answers {
                    let mut head = String::new();
                    while reader.read_line(&mut head).unwrap() > 2 {
                        head.clear();
                    }
                    let mut body = [0; 5];
                    reader.read_exact(&mut body).unwrap();
                    assert_eq!(&body, b"hello");
                    reader.get_mut().write_all(answer).unwrap();
                }
            }
            accepted
        });
        let mut connection = Connection::new(addr);
        let request = Request::post(format!("http://{addr}/x")).body(()).unwrap();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let response = connection.exchange(&request, &[b"hel", b"lo"]).unwrap();
            bodies.push(String::from_utf8(response.into_body()).unwrap());
        }
        assert_eq!(bodies, ["ok", "no", "again"]);
        assert_eq!(server.join().unwrap(), 2);
    }
}
