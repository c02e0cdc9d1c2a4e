//! Runs the built binary against loopback servers and checks its exit status.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A one-shot loopback server: accepts one connection, reads the request head,
/// sends `reply` (in two writes, to exercise partial reads), and reports the request.
fn serve_once(reply: &[u8]) -> (u16, mpsc::Receiver<String>) {
    let reply = reply.to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let (first, rest) = reply.split_at(reply.len().min(7));
        let _ = conn.write_all(first);
        let _ = conn.flush();
        thread::sleep(Duration::from_millis(20));
        let _ = conn.write_all(rest);
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
    });
    (port, rx)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_healthcheck")).args(args).output().unwrap()
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/health")
}

#[test]
fn ok_on_200() {
    let (port, request) =
        serve_once(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}");
    let out = run(&[&url(port)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let request = request.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request:?}");
    assert!(request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{request:?}");
}

#[test]
fn port_shorthand_probes_health_on_loopback() {
    let (port, request) = serve_once(b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(run(&[&port.to_string()]).status.code(), Some(0));
    assert!(request.recv_timeout(Duration::from_secs(5)).unwrap().starts_with("GET /health "));
}

#[test]
fn fails_on_503() {
    let (port, _) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n");
    let out = run(&[&url(port)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
}

#[test]
fn fails_on_other_statuses_and_garbage() {
    for reply in
        [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 404 Not Found\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b""]
    {
        let (port, _) = serve_once(reply);
        assert_eq!(run(&[&url(port)]).status.code(), Some(1), "reply {:?}", String::from_utf8_lossy(reply));
    }
}

#[test]
fn fails_when_nothing_listens() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert_eq!(run(&[&url(port)]).status.code(), Some(1));
}

#[test]
fn fails_fast_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then never answers.
    let holder = thread::spawn(move || {
        let conn = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(1500));
        drop(conn);
    });
    let started = Instant::now();
    let out = run(&["--timeout-ms", "300", &url(port)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    holder.join().unwrap();
}

#[test]
fn bad_arguments_exit_1() {
    assert_eq!(run(&["https://127.0.0.1:8001/health"]).status.code(), Some(1));
    assert_eq!(run(&["--timeout-ms"]).status.code(), Some(1));
    assert_eq!(run(&["--help"]).status.code(), Some(1));
}
