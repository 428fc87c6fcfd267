//! The I/O both client adapters do the same way, in one place: opening the file an upload
//! sends (its length, name and fingerprint), reading it by offset from any number of part
//! senders and in order for the md5 pass, writing the resume snapshot atomically, the stop
//! signal and the loop's turn both clients take around the core's machine, the one place
//! that reads the clock and draws random bytes, and which certificate authorities https
//! trusts ([`trust`]: Mozilla's roots, and a team's own CA from `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`), and what the client's sockets hold not yet acknowledged by the peer
//! ([`unacked`]: progress counts what has left the machine).
//!
//! It exists because `uploads-core` does no I/O: the core decides, this crate touches the
//! file system and the clock, and `uploads-hyper` and `uploads-ureq` add only their
//! transport. It is blocking (std only): the async adapter calls it on blocking threads.
//!
//! ```
//! use std::io::Cursor;
//! use std::sync::atomic::AtomicBool;
//!
//! let source = uploads_client_io::Source::new(Cursor::new(b"hello world".to_vec()), 11);
//! let mut word = [0; 5];
//! source.read_exact_at(6, &mut word)?;
//! assert_eq!(&word, b"world");
//! assert_eq!(
//!     source.md5_hex(&AtomicBool::new(false))?,
//!     "5eb63bbbe01eeed093cb22bb8f5acdc3"
//! );
//! # Ok::<(), std::io::Error>(())
//! ```

mod source;
mod stop;
mod system;
pub mod trust;
mod turn;
pub mod unacked;

pub use source::{OpenedFile, Source, write_atomically};
pub use stop::StopSignal;
pub use system::{boundary, jitter, now_unix_ms};
pub use turn::{Turn, turn};
