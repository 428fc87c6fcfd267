//! Several `uploads serve` processes on one PostgreSQL database and one bucket (the harness's
//! private PostgreSQL and moto), behind a round-robin TCP balancer that opens a new backend
//! connection per client connection; every request below is a new connection, so consecutive
//! requests land on different instances. Bytes are checked exactly; races are repeated with a
//! seed; one instance is killed (SIGKILL) mid-upload and restarted.

#[path = "../../uploads-server/tests/support/services.rs"]
mod services;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::Duration;

use services::{Namespace, PlainPostgres, Services};

const BINARY: &str = env!("CARGO_BIN_EXE_uploads");
const KEY_A: &str = "sk-scaleout-alpha";
const KEY_B: &str = "sk-scaleout-bravo";
/// A hang guard for one exchange, never a measurement.
const GUARD: Duration = Duration::from_mins(2);

/// One `uploads serve` on the shared namespace.
/// `uploads serve` on `namespace`'s bucket and `database_url`, its log on a pipe.
fn serve(namespace: &Namespace, database_url: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--api-key")
        .arg(format!("{KEY_A}=proj_a,{KEY_B}=proj_b"))
        .arg("--database-url")
        .arg(database_url)
        .arg("--object-store")
        .arg(&namespace.object_store)
        .envs(namespace.s3_env())
        .env("RUST_LOG", "warn,uploads_server::server=info")
        .env_remove("UPLOADS_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

struct Instance {
    process: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn start(namespace: &Namespace) -> Self {
        Self::start_on(namespace, &namespace.database_url)
    }

    /// An instance reaching the namespace's database by `database_url` (another
    /// `application_name`, say).
    fn start_on(namespace: &Namespace, database_url: &str) -> Self {
        let mut process = serve(namespace, database_url)
            .spawn()
            .expect("spawn uploads serve");
        let stderr = process.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(GUARD) else {
            let _ = process.kill();
            panic!(
                "uploads serve did not start; its log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Self { process, addr, log }
    }

    /// Sends a signal by name (`STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.process.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// SIGKILL: no handler runs, nothing is flushed.
    fn kill(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("local_addr=")? + "local_addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A round-robin TCP balancer: each accepted connection goes to the next backend that
/// accepts a connection (a dead one is skipped).
struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let shared = Arc::clone(&backends);
        let next = AtomicUsize::new(0);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let list = shared.lock().unwrap().clone();
                let start = next.fetch_add(1, Ordering::SeqCst);
                let backend = (0..list.len())
                    .find_map(|i| TcpStream::connect(list[(start + i) % list.len()]).ok());
                if let Some(backend) = backend {
                    pipe(client, backend);
                }
            }
        });
        Self { addr, backends }
    }

    fn replace(&self, old: SocketAddr, new: SocketAddr) {
        for backend in self.backends.lock().unwrap().iter_mut() {
            if *backend == old {
                *backend = new;
            }
        }
    }
}

/// Copies both ways until each side ends.
fn pipe(client: TcpStream, backend: TcpStream) {
    let (client2, backend2) = (client.try_clone().unwrap(), backend.try_clone().unwrap());
    std::thread::spawn(move || copy_then_close(client, backend));
    std::thread::spawn(move || copy_then_close(backend2, client2));
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// A response: status and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request to `/v1{path}` on a new connection (`Connection: close`); `None` when the
/// connection broke (the instance died under it).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    content_type: &str,
    body: &[u8],
) -> Option<Answer> {
    exchange_at(addr, method, &format!("/v1{path}"), key, content_type, body)
}

/// [`exchange`] with the request target as it is.
fn exchange_at(
    addr: SocketAddr,
    method: &str,
    target: &str,
    key: &str,
    content_type: &str,
    body: &[u8],
) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(response.len() - split - 4);
    let body = response[split + 4..].to_vec();
    (body.len() == length).then_some(Answer { status, body })
}

/// Like [`exchange`], retried (as the SDKs do) while connections break.
fn request(addr: SocketAddr, method: &str, path: &str, key: &str, json: &str) -> Answer {
    for _ in 0..10 {
        if let Some(answer) = exchange(addr, method, path, key, "application/json", json.as_bytes())
        {
            return answer;
        }
    }
    panic!("{method} {path}: every attempt broke");
}

/// The `Content-Type` and body of an add-part form carrying `data`.
fn part_form(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "scaleout-boundary-7c1d";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"blob\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Adds a Part, retrying broken connections; the Part's id.
fn add_part(addr: SocketAddr, upload: &str, data: &[u8]) -> String {
    let (content_type, body) = part_form(data);
    for _ in 0..10 {
        let path = format!("/uploads/{upload}/parts");
        if let Some(answer) = exchange(addr, "POST", &path, KEY_A, &content_type, &body) {
            if answer.status == 200 {
                return answer.json()["id"].as_str().unwrap().to_owned();
            }
            assert!(answer.status >= 500, "add part: {answer:?}");
        }
    }
    panic!("add part: every attempt failed");
}

fn create(addr: SocketAddr, bytes: usize) -> String {
    let answer = request(
        addr,
        "POST",
        "/uploads",
        KEY_A,
        &format!(
            r#"{{"filename":"data.bin","purpose":"user_data","bytes":{bytes},"mime_type":"application/octet-stream"}}"#
        ),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["id"].as_str().unwrap().to_owned()
}

fn md5_hex(data: &[u8]) -> String {
    let mut hasher = uploads_core::digest::Md5Hasher::new();
    hasher.update(data);
    hasher.finish_hex()
}

/// `POST /uploads/{upload}/complete` with `body`.
fn complete(addr: SocketAddr, upload: &str, body: &str) -> Answer {
    request(
        addr,
        "POST",
        &format!("/uploads/{upload}/complete"),
        KEY_A,
        body,
    )
}

fn complete_body(parts: &[String], md5: Option<&str>) -> String {
    let ids: Vec<String> = parts.iter().map(|id| format!("\"{id}\"")).collect();
    match md5 {
        Some(md5) => format!(r#"{{"part_ids":[{}],"md5":"{md5}"}}"#, ids.join(",")),
        None => format!(r#"{{"part_ids":[{}]}}"#, ids.join(",")),
    }
}

/// A seeded generator for data and race choices (splitmix64).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn cluster(n: usize) -> (Namespace, Vec<Instance>, Balancer) {
    let namespace = Services::get().fresh();
    let instances: Vec<Instance> = (0..n).map(|_| Instance::start(&namespace)).collect();
    let balancer = Balancer::start(instances.iter().map(|instance| instance.addr).collect());
    (namespace, instances, balancer)
}

#[test]
fn an_upload_spread_over_three_instances_reads_back_byte_exact_and_stays_its_owners() {
    let (_namespace, _instances, balancer) = cluster(3);
    let addr = balancer.addr;
    let mut seeded = Seeded(15);
    let chunks: Vec<Vec<u8>> = (0..7).map(|i| seeded.bytes(100_000 + i * 7_919)).collect();
    let data: Vec<u8> = chunks.concat();
    let upload = create(addr, data.len());
    let parts: Vec<String> = chunks
        .iter()
        .map(|chunk| add_part(addr, &upload, chunk))
        .collect();
    let body = complete_body(&parts, Some(&md5_hex(&data)));
    let done = complete(addr, &upload, &body);
    assert_eq!(done.status, 200, "{done:?}");
    let file = done.json()["file"]["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let replay = request(
            addr,
            "POST",
            &format!("/uploads/{upload}/complete"),
            KEY_A,
            &body,
        );
        assert_eq!(
            replay.json()["file"]["id"],
            file.as_str(),
            "a replay on any instance"
        );
        let content = request(addr, "GET", &format!("/files/{file}/content"), KEY_A, "");
        assert_eq!(content.status, 200);
        assert!(content.body == data, "byte-exact on every instance");
        let hidden = request(addr, "GET", &format!("/files/{file}"), KEY_B, "");
        assert_eq!(hidden.status, 404, "another owner sees nothing");
    }
    let list = request(addr, "GET", "/files?purpose=user_data", KEY_A, "").json();
    assert_eq!(list["data"][0]["id"], file.as_str());
}

/// OpenAI's own Python SDK, as its users call it, with a new connection per request: the
/// create, every part, the complete, the content and the list each land on the next
/// instance.
#[test]
fn the_official_python_sdk_uploads_through_three_instances() {
    let (_namespace, _instances, balancer) = cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.jsonl");
    let data = Seeded(16).bytes(1_000_003);
    std::fs::write(&path, &data).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(services::venv_python())
        .arg(root.join("tests/scaleout/sdk_upload.py"))
        .arg(format!("http://{}/v1", balancer.addr))
        .arg(KEY_A)
        .arg(&path)
        .arg("150000")
        .output()
        .expect("run the SDK script");
    assert!(
        output.status.success(),
        "the SDK's upload failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let content = request(
        balancer.addr,
        "GET",
        &format!("/files/{file}/content"),
        KEY_A,
        "",
    );
    assert!(content.body == data, "byte-exact through any instance");
}

#[test]
fn cross_instance_races_have_exactly_one_winner() {
    let (_namespace, _instances, balancer) = cluster(3);
    let addr = balancer.addr;
    let mut seeded = Seeded(1515);
    for round in 0..8 {
        let len = 1000 + (seeded.next() % 1000) as usize;
        let data = seeded.bytes(len);
        let upload = create(addr, data.len());
        let part = add_part(addr, &upload, &data);
        let complete = complete_body(std::slice::from_ref(&part), Some(&md5_hex(&data)));
        let cancel_races = seeded.next() % 2 == 1;
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let (barrier, upload, complete) =
                    (Arc::clone(&barrier), upload.clone(), complete.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if i == 1 && cancel_races {
                        request(
                            addr,
                            "POST",
                            &format!("/uploads/{upload}/cancel"),
                            KEY_A,
                            "",
                        )
                    } else {
                        request(
                            addr,
                            "POST",
                            &format!("/uploads/{upload}/complete"),
                            KEY_A,
                            &complete,
                        )
                    }
                })
            })
            .collect();
        let answers: Vec<Answer> = racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect();
        let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
        if cancel_races {
            assert!(
                statuses
                    .iter()
                    .all(|status| *status == 200 || *status == 400),
                "round {round}: never a 500, {answers:?}"
            );
            assert_eq!(
                statuses.iter().filter(|status| **status == 200).count(),
                1,
                "round {round}: {answers:?}"
            );
        } else {
            assert_eq!(statuses, [200, 200], "round {round}: {answers:?}");
            assert_eq!(
                answers[0].json()["file"]["id"],
                answers[1].json()["file"]["id"],
                "round {round}: the loser replays the winner's File"
            );
            let other = complete_body(&[part.clone(), part.clone()], None);
            let refused = request(
                addr,
                "POST",
                &format!("/uploads/{upload}/complete"),
                KEY_A,
                &other,
            );
            assert_eq!(refused.status, 400, "a different list");
        }
        let state = request(
            addr,
            "POST",
            &format!("/uploads/{upload}/complete"),
            KEY_A,
            &complete,
        );
        let completed = state.status == 200;
        let listed = request(addr, "GET", "/files", KEY_A, "").json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|file| {
                file["bytes"] == data.len() && {
                    let id = file["id"].as_str().unwrap();
                    request(addr, "GET", &format!("/files/{id}/content"), KEY_A, "").body == data
                }
            });
        assert_eq!(
            completed, listed,
            "round {round}: a File exists iff complete won"
        );
    }
}

#[test]
fn an_instance_killed_mid_upload_loses_nothing_acknowledged_and_restarts() {
    let (namespace, mut instances, balancer) = cluster(3);
    let addr = balancer.addr;
    let mut seeded = Seeded(99);
    let chunks: Vec<Vec<u8>> = (0..12).map(|_| seeded.bytes(300_000)).collect();
    let data = chunks.concat();
    let upload = create(addr, data.len());
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let (kill_tx, kill_rx) = mpsc::channel::<()>();
    let sender = {
        let (upload, chunks, acknowledged) =
            (upload.clone(), chunks.clone(), Arc::clone(&acknowledged));
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                ids.push(add_part(addr, &upload, chunk));
                acknowledged.fetch_add(1, Ordering::SeqCst);
                if i == 4 {
                    // Half-way: the test kills an instance before the next Part goes.
                    kill_tx.send(()).unwrap();
                }
            }
            ids
        })
    };
    kill_rx.recv_timeout(GUARD).unwrap();
    let victim = instances.remove(1);
    let old = victim.addr;
    victim.kill();
    let parts = sender.join().unwrap();
    assert_eq!(acknowledged.load(Ordering::SeqCst), 12);
    let restarted = Instance::start(&namespace);
    balancer.replace(old, restarted.addr);
    instances.push(restarted);
    let body = complete_body(&parts, Some(&md5_hex(&data)));
    let done = complete(addr, &upload, &body);
    let logs: Vec<String> = instances
        .iter()
        .map(|instance| instance.log.lock().unwrap().join("\n"))
        .collect();
    assert_eq!(done.status, 200, "{done:?}\n{}", logs.join("\n--\n"));
    let file = done.json()["file"]["id"].as_str().unwrap().to_owned();
    for instance in &instances {
        let content = request(
            instance.addr,
            "GET",
            &format!("/files/{file}/content"),
            KEY_A,
            "",
        );
        assert!(content.body == data, "byte-exact on {}", instance.addr);
    }
}

/// `uploads serve` with a database or bucket it cannot reach: exits at once, naming it.
fn failed_start(database_url: &str, object_store: &str, namespace: &Namespace) -> String {
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--database-url")
        .arg(database_url)
        .arg("--object-store")
        .arg(object_store)
        .envs(namespace.s3_env())
        .env_remove("UPLOADS_API_KEYS")
        .stdin(Stdio::null())
        .output()
        .expect("run uploads serve");
    assert!(!output.status.success(), "started anyway");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn startup_names_an_unreachable_database_or_bucket() {
    let namespace = Services::get().fresh();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{closed}/gone?connect_timeout=2");
    let stderr = failed_start(&nowhere, &namespace.object_store, &namespace);
    assert!(
        stderr.contains(&format!(
            "cannot reach the database at postgres@127.0.0.1:{closed}/gone"
        )),
        "{stderr}"
    );
    let no_bucket = namespace
        .object_store
        .replace(&namespace.bucket, "no-such-bucket");
    let stderr = failed_start(&namespace.database_url, &no_bucket, &namespace);
    assert!(stderr.contains("cannot reach the object store"), "{stderr}");
}

/// `GET /healthz` (outside `/v1`).
fn health(addr: SocketAddr) -> Answer {
    exchange_at(addr, "GET", "/healthz", KEY_A, "application/json", b"").expect("answered")
}

/// One attempt to add a one-byte Part; `None` when the connection broke.
fn try_add_part(addr: SocketAddr, upload: &str, key: &str) -> Option<Answer> {
    let (content_type, body) = part_form(b"x");
    let path = format!("/uploads/{upload}/parts");
    exchange(addr, "POST", &path, key, &content_type, &body)
}

/// An instance frozen (SIGSTOP) while it holds an Upload's row lock inside a transaction:
/// the healthy instance answers requests for that Upload with 200 or 503 (never a hang or a
/// 500), serves every other tenant, says it is healthy, and takes the Upload's Parts again
/// once the database has ended the frozen session; the frozen one serves again when resumed.
#[test]
fn an_instance_frozen_mid_transaction_leaves_the_others_serving() {
    let namespace = Services::get().fresh();
    let frozen = Instance::start_on(
        &namespace,
        &format!("{}?application_name=frozen", namespace.database_url),
    );
    let healthy = Instance::start(&namespace);
    let upload = create(healthy.addr, 1);
    let in_transaction = || {
        Services::get().psql_on(
            &namespace.database,
            // Waiting inside a transaction that has locked rows (locking a row assigns the
            // transaction an id; the instance only locks the Upload's row here: its sweep
            // finds nothing to claim).
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'frozen' AND state = 'idle in transaction' \
               AND backend_xid IS NOT NULL",
        ) != "0"
    };
    // Parts for the Upload keep arriving at the instance about to freeze.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeders: Vec<_> = (0..3)
        .map(|_| {
            let (stop, upload, addr) = (Arc::clone(&stop), upload.clone(), frozen.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = try_add_part(addr, &upload, KEY_A);
                }
            })
        })
        .collect();
    let mut caught = false;
    for attempt in 0..300_u64 {
        std::thread::sleep(Duration::from_millis(3 + attempt % 7));
        frozen.signal("STOP");
        // Statements already sent finish; the session then waits inside its transaction.
        std::thread::sleep(Duration::from_millis(150));
        if in_transaction() {
            caught = true;
            break;
        }
        frozen.signal("CONT");
    }
    assert!(caught, "never froze inside a transaction");

    let stuck: Vec<_> = (0..24)
        .map(|_| {
            let (upload, addr) = (upload.clone(), healthy.addr);
            std::thread::spawn(move || try_add_part(addr, &upload, KEY_A))
        })
        .collect();
    let health = health(healthy.addr);
    assert_eq!(health.status, 200, "{health:?}");
    for _ in 0..3 {
        let other = request(
            healthy.addr,
            "POST",
            "/uploads",
            KEY_B,
            r#"{"filename":"b.txt","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#,
        );
        assert_eq!(other.status, 200, "another tenant is served: {other:?}");
        assert_eq!(
            request(healthy.addr, "GET", "/files", KEY_B, "").status,
            200
        );
    }
    for request in stuck {
        let answer = request.join().unwrap().expect("answered, not cut");
        assert!(
            answer.status == 200 || answer.status == 503,
            "200 or a retryable 503: {answer:?}"
        );
    }
    // The database ends the frozen session within its idle-in-transaction timeout.
    let mut taken = false;
    for _ in 0..120 {
        if try_add_part(healthy.addr, &upload, KEY_A).is_some_and(|answer| answer.status == 200) {
            taken = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(taken, "the Upload's lock was never released");
    let mut ended = false;
    for _ in 0..120 {
        if !in_transaction() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ended, "the database never ended the frozen session");

    frozen.signal("CONT");
    stop.store(true, Ordering::SeqCst);
    for feeder in feeders {
        feeder.join().unwrap();
    }
    let resumed = create(frozen.addr, 1);
    assert!(!resumed.is_empty());
}

/// `uploads serve` on a database URL whose TLS the database cannot honour: the process ends
/// at startup and says why, naming the server and the `sslmode`.
#[test]
fn serve_with_sslmode_require_on_a_database_without_tls_stops_saying_so() {
    let namespace = Services::get().fresh();
    let port = PlainPostgres::get().port;
    let database_url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    let mut process = serve(&namespace, &database_url)
        .spawn()
        .expect("spawn uploads serve");
    let deadline = std::time::Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = process.kill();
            panic!("uploads serve started on a database without TLS under sslmode=require");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    process
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot start the server on 127.0.0.1:0 with records in PostgreSQL, bytes in {}: \
             PostgreSQL at 127.0.0.1:{port} does not accept TLS, and sslmode=require",
            namespace.object_store
        )),
        "{stderr}"
    );
}
