//! Tests of the parent module.
use super::*;
use std::net::TcpListener;

const JOB: &str = "job-a";
const WAIT: Duration = Duration::from_secs(5);

fn server() -> (StoreServer, u16) {
    let server = StoreServer::start("127.0.0.1", 0, JOB).expect("server starts");
    let port = server.addr().port();
    (server, port)
}

fn client(port: u16) -> StoreClient {
    StoreClient::connect("127.0.0.1", port, JOB, WAIT).expect("client connects")
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
fn another_job_is_rejected_with_both_ids() {
    let (_server, port) = server();
    match StoreClient::connect("127.0.0.1", port, "job-b", WAIT) {
        Err(Error::Handshake(msg)) => {
            assert!(msg.contains("'job-a'") && msg.contains("'job-b'"), "{msg}")
        }
        Err(e) => panic!("expected a handshake error, got {e}"),
        Ok(_) => panic!("expected a handshake error"),
    }
    client(port).set("k", b"v").expect("the server still works");
}

#[test]
fn nothing_listening_times_out() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let t0 = Instant::now();
    match StoreClient::connect("127.0.0.1", port, JOB, Duration::from_millis(300)) {
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
        let server = StoreServer::start("127.0.0.1", port, JOB).expect("server starts");
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
        StoreServer::start("127.0.0.1", port, JOB),
        Err(Error::Bind { .. })
    ));
    assert!(matches!(
        StoreServer::start("no.such.host.invalid", 0, JOB),
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
        // A valid handshake followed by a huge frame length, then by a malformed request.
        [
            &MAGIC[..],
            &1u32.to_le_bytes(),
            &5u32.to_le_bytes(),
            b"job-a",
            &u32::MAX.to_le_bytes(),
        ]
        .concat(),
        [
            &MAGIC[..],
            &1u32.to_le_bytes(),
            &5u32.to_le_bytes(),
            b"job-a",
            &3u32.to_le_bytes(),
            &[OP_SET, 200, 0],
        ]
        .concat(),
        [&MAGIC[..], &1u32.to_le_bytes(), &u32::MAX.to_le_bytes()].concat(),
    ];
    for bytes in sends {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(&bytes).expect("write");
        let mut sink = Vec::new();
        // The server drops the connection (after its handshake answer, if any).
        let _ = s.read_to_end(&mut sink);
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
        match StoreClient::connect("127.0.0.1", port, JOB, WAIT) {
            Err(Error::Handshake(msg)) => assert!(msg.contains("not a pretrain store"), "{msg}"),
            Err(e) => panic!("expected a handshake error, got {e}"),
            Ok(_) => panic!("expected a handshake error"),
        }
    }
    fake.join().expect("thread");
}

#[test]
fn closed_server_connection_is_peer_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fake = std::thread::spawn(move || {
        // Accept the handshake like a store, then hang up.
        let (mut s, _) = listener.accept().expect("accept");
        let mut hello = [0u8; 14 + 4 + 4 + 5];
        s.read_exact(&mut hello).expect("hello");
        let mut reply = MAGIC.to_vec();
        reply.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        put_bytes(&mut reply, JOB.as_bytes());
        reply.push(ST_OK);
        s.write_all(&reply).expect("reply");
    });
    let mut c = client(port);
    fake.join().expect("thread");
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
    let big = vec![0u8; MAX_FRAME_BYTES + 1];
    assert!(matches!(c.set("k", &big), Err(Error::Io { .. })));
    let long_key = "x".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(c.set(&long_key, b"v"), Err(Error::Io { .. })));
    c.set("k", b"v").expect("still usable");
}
