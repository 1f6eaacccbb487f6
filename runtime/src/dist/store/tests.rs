//! Tests of the parent module.
use super::*;
use std::net::TcpListener;

const JOB: &str = "job-a";
const WAIT: Duration = Duration::from_secs(5);

fn token() -> Token {
    Token::new("store-test-token-0123456789", "test").expect("token")
}

fn server() -> (StoreServer, u16) {
    let server = StoreServer::start("127.0.0.1", 0, JOB, &token()).expect("server starts");
    let port = server.addr().port();
    (server, port)
}

fn client(port: u16) -> StoreClient {
    StoreClient::connect("127.0.0.1", port, JOB, &token(), WAIT).expect("client connects")
}

#[test]
fn set_get_try_get_across_clients() {
    let (_server, port) = server();
    let mut a = client(port);
    assert_eq!(a.local_ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!(a.try_get("k").expect("try_get"), None);
    let waiter = std::thread::spawn(move || {
        let mut b = client(port);
        b.get("k", WAIT).expect("get waits for the key")
    });
    std::thread::sleep(Duration::from_millis(50));
    a.set("k", b"value").expect("set");
    assert_eq!(waiter.join().expect("thread"), b"value");
    assert_eq!(a.try_get("k").expect("try_get"), Some(b"value".to_vec()));
    a.set("k", b"").expect("set empty");
    assert_eq!(a.get("k", WAIT).expect("get"), b"");
    let big = vec![7u8; 1 << 20];
    a.set("big", &big).expect("set 1 MiB");
    assert_eq!(client(port).get("big", WAIT).expect("get 1 MiB"), big);
}

#[test]
fn add_is_atomic_and_barrier_releases_everyone() {
    let (_server, port) = server();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = client(port);
                for _ in 0..50 {
                    c.add("counter", 1).expect("add");
                }
                c.barrier("b1", 4, WAIT).expect("barrier");
                c.wait(&["counter", "b1"], WAIT).expect("wait");
                c.add("counter", 0).expect("read counter")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 200);
    }
    let mut c = client(port);
    assert_eq!(c.add("counter", -200).expect("add"), 0);
    assert_eq!(c.get("counter", WAIT).expect("counter as text"), b"0");
    c.set("text", b"abc").expect("set");
    assert!(matches!(c.add("text", 1), Err(Error::Mismatch(_))));
    assert_eq!(c.add("counter", 5).expect("still usable"), 5);
}

#[test]
fn missing_keys_time_out_quickly() {
    let (_server, port) = server();
    let mut c = client(port);
    let t0 = Instant::now();
    match c.get("missing", Duration::from_millis(200)) {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("missing"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    c.set("present", b"1").expect("set");
    match c.wait(&["present", "absent"], Duration::from_millis(200)) {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("absent"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(matches!(
        c.barrier("lonely", 2, Duration::from_millis(200)),
        Err(Error::Timeout { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(c.get("present", WAIT).expect("still usable"), b"1");
}

#[test]
fn another_job_or_token_is_rejected_without_revealing_the_store_s() {
    let (_server, port) = server();
    let other = Token::new("another-token-0123456789", "test").expect("token");
    for (job, token) in [("job-b", token()), (JOB, other)] {
        match StoreClient::connect("127.0.0.1", port, job, &token, WAIT) {
            Err(Error::Handshake(msg)) => {
                assert!(
                    msg.contains("cannot prove it holds this job's token"),
                    "{msg}"
                );
                assert!(!msg.contains("'job-a'") || job == JOB, "{msg}");
            }
            Err(e) => panic!("expected a handshake error, got {e}"),
            Ok(_) => panic!("expected a handshake error"),
        }
    }
    client(port).set("k", b"v").expect("the server still works");
}

/// Sends `hello` to the store at `port` and returns all it answers until it closes.
fn raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

#[test]
fn a_peer_without_the_token_learns_nothing_and_gets_nothing() {
    let (_server, port) = server();
    client(port).set("launch/0/failed", b"0 2").expect("set");
    // A well-formed hello and a wrong proof: the answer is magic, version, nonce, the
    // server's proof and a refusal; the job id appears nowhere, and requests that follow are
    // never read.
    let hello = [&MAGIC[..], &PROTOCOL_VERSION.to_le_bytes(), &[7u8; 32]].concat();
    let mut get = vec![OP_TRY_GET];
    put_bytes(&mut get, b"launch/0/failed");
    let mut frame = Vec::new();
    put_bytes(&mut frame, &get);
    let answer = raw(port, &[&hello[..], &[0u8; 32], &frame].concat());
    assert_eq!(answer.len(), MAGIC.len() + 4 + 32 + 32 + 1, "{answer:?}");
    assert_eq!(answer.last(), Some(&ST_REFUSED));
    assert!(!answer.windows(JOB.len()).any(|w| w == JOB.as_bytes()));
    // Another protocol version: magic and version only.
    let old = raw(
        port,
        &[&MAGIC[..], &1u32.to_le_bytes(), &[0u8; 64]].concat(),
    );
    assert_eq!(old, [&MAGIC[..], &PROTOCOL_VERSION.to_le_bytes()].concat());
    assert_eq!(
        client(port).get("launch/0/failed", WAIT).expect("intact"),
        b"0 2"
    );
}

#[test]
fn limits_refuse_with_a_reason_and_the_store_goes_on() {
    let limits = Limits {
        max_keys: 4,
        max_value_bytes: 1000,
        max_total_bytes: 2500,
        ..Limits::default()
    };
    let server =
        StoreServer::with_limits("127.0.0.1", 0, JOB, &token(), limits).expect("server starts");
    let mut c = client(server.addr().port());
    c.set("a", &[0; 1000]).expect("at the value limit");
    match c.set("b", &[0; 1001]) {
        Err(Error::Refused(msg)) => assert!(msg.contains("1001 bytes exceeds"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.set("b", &[0; 1000]).expect("second value");
    match c.set("c", &[0; 1000]) {
        Err(Error::Refused(msg)) => assert!(msg.contains("more than its limit of 2500"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.set("b", &[0; 10]).expect("replacing frees its bytes");
    c.add("c", 1).expect("third key");
    c.set("d", b"x").expect("fourth key");
    match c.add("e", 1) {
        Err(Error::Refused(msg)) => assert!(msg.contains("4 keys"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(c.get("a", WAIT).expect("still usable").len(), 1000);
}

#[test]
fn silent_and_slow_connections_are_closed() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let server =
        StoreServer::with_limits("127.0.0.1", 0, JOB, &token(), limits).expect("server starts");
    let port = server.addr().port();
    let t0 = Instant::now();
    // Says nothing: closed after the handshake timeout.
    assert!(raw(port, b"").is_empty());
    // Starts a frame and never finishes it: closed after the frame timeout.
    let mut c = client(port);
    c.stream.write_all(&[10, 0]).expect("half a length");
    let mut sink = Vec::new();
    c.stream.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(c.stream.read_to_end(&mut sink).expect("closed"), 0);
    // Stays idle: closed after the idle timeout.
    let mut idle = client(port);
    std::thread::sleep(Duration::from_millis(900));
    assert!(matches!(idle.try_get("k"), Err(Error::PeerLost { .. })));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    client(port).set("k", b"v").expect("the store goes on");
}

#[test]
fn connection_floods_stay_within_the_limits() {
    let limits = Limits {
        max_connections: 40,
        max_pending: 8,
        ..Limits::default()
    };
    let server =
        StoreServer::with_limits("127.0.0.1", 0, JOB, &token(), limits).expect("server starts");
    let port = server.addr().port();
    // 100 half-open connections: the oldest pending ones are evicted, so a real client still
    // gets in at once.
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let mut c = client(port);
    c.set("k", b"v").expect("served during a flood");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Authenticated connections count against the connection limit: beyond it, new ones are
    // closed at once.
    let held: Vec<StoreClient> = (0..45)
        .filter_map(|_| StoreClient::connect("127.0.0.1", port, JOB, &token(), WAIT).ok())
        .collect();
    assert!(held.len() < 40, "{} connections accepted", held.len());
    drop(flood);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(client(port).get("k", WAIT).expect("after the flood"), b"v");
}

#[test]
fn nothing_listening_times_out() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let t0 = Instant::now();
    match StoreClient::connect("127.0.0.1", port, JOB, &token(), Duration::from_millis(300)) {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("the master at"), "{what}"),
        Err(e) => panic!("expected a timeout, got {e}"),
        Ok(_) => panic!("expected a timeout"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn client_waits_for_a_late_master() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let server = StoreServer::start("127.0.0.1", port, JOB, &token()).expect("server starts");
        std::thread::sleep(Duration::from_millis(1000));
        drop(server);
    });
    let mut c = client(port);
    c.set("k", b"v").expect("set");
    late.join().expect("thread");
}

#[test]
fn port_in_use_is_a_bind_error() {
    let (_server, port) = server();
    assert!(matches!(
        StoreServer::start("127.0.0.1", port, JOB, &token()),
        Err(Error::Bind { .. })
    ));
    assert!(matches!(
        StoreServer::start("no.such.host.invalid", 0, JOB, &token()),
        Err(Error::Bind { .. })
    ));
}

#[test]
fn garbage_does_not_crash_the_server() {
    let (_server, port) = server();
    let mut good = client(port);
    good.set("k", b"v").expect("set");
    let sends: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xff; 100],
        [&MAGIC[..], &PROTOCOL_VERSION.to_le_bytes()].concat(),
        [&MAGIC[..], &u32::MAX.to_le_bytes(), &u32::MAX.to_le_bytes()].concat(),
        vec![0; 1 << 16],
    ];
    for bytes in sends {
        raw(port, &bytes);
    }
    // Authenticated garbage: a huge frame length, then a malformed request.
    for bytes in [
        u32::MAX.to_le_bytes().to_vec(),
        vec![3, 0, 0, 0, OP_SET, 200, 0],
    ] {
        let mut c = client(port);
        c.stream.write_all(&bytes).expect("write");
        c.stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut sink = Vec::new();
        assert_eq!(c.stream.read_to_end(&mut sink).expect("dropped"), 0);
    }
    assert_eq!(good.get("k", WAIT).expect("the old client works"), b"v");
    assert_eq!(
        client(port).get("k", WAIT).expect("a new client works"),
        b"v"
    );
}

#[test]
fn a_non_store_server_is_a_handshake_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fake = std::thread::spawn(move || {
        for reply in [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], b""] {
            let (mut s, _) = listener.accept().expect("accept");
            let _ = s.write_all(reply);
        }
    });
    for _ in 0..2 {
        match StoreClient::connect("127.0.0.1", port, JOB, &token(), WAIT) {
            Err(Error::Handshake(msg)) => assert!(msg.contains("not a pretrain store"), "{msg}"),
            Err(e) => panic!("expected a handshake error, got {e}"),
            Ok(_) => panic!("expected a handshake error"),
        }
    }
    fake.join().expect("thread");
}

#[test]
fn closed_server_connection_is_peer_lost() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let server =
        StoreServer::with_limits("127.0.0.1", 0, JOB, &token(), limits).expect("server starts");
    let mut c = client(server.addr().port());
    std::thread::sleep(Duration::from_millis(400));
    match c.set("k", b"v") {
        Err(Error::PeerLost { rank: 0, detail }) => assert!(detail.contains("closed"), "{detail}"),
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert!(matches!(c.try_get("k"), Err(Error::PeerLost { .. })));
}

#[test]
fn oversized_values_are_refused_locally() {
    let (_server, port) = server();
    let mut c = client(port);
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(c.set("k", &big), Err(Error::Io { .. })));
    let long_key = "x".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(c.set(&long_key, b"v"), Err(Error::Io { .. })));
    c.set("k", b"v").expect("still usable");
}
