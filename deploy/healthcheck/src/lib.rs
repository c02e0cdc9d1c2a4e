//! A minimal HTTP/1.1 health probe over `std::net::TcpStream`.
//!
//! Why a binary of our own: the final image is `ghcr.io/spinframework/spin`, a
//! Debian slim image with only the `spin` binary added — no curl, wget or
//! Python to run a probe with, and Spin itself has no "check a URL" command.
//! Installing curl would mean an apt layer (and its CVE surface) in the runtime
//! image; a static, std-only Rust binary of a few hundred KiB built in the
//! Rust stage costs nothing at run time and needs no shell.
//!
//! Contract: `healthcheck [URL|PORT] [--timeout-ms N]` exits 0 when the status
//! line of the answer is `HTTP/1.x 200`, and 1 on anything else (other status,
//! refused connection, timeout, garbage, bad arguments). Docker reserves exit
//! code 2, so it is never used.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8001/health";
/// Longer than the gateway's own Ximilar probe (`XIMILAR_HEALTH_TIMEOUT_MS`,
/// 3 s), so a slow Ximilar never makes the gateway itself look unhealthy.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);
/// The status line must fit in this many bytes.
const MAX_STATUS_LINE: usize = 1024;

pub const USAGE: &str = "usage: healthcheck [URL|PORT] [--timeout-ms N]\n\
  URL   http://host[:port][/path]   (default http://127.0.0.1:8001/health)\n\
  PORT  a port on 127.0.0.1, path /health\n\
exit 0 if the answer's status is 200, else 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host to connect to (an IPv6 literal without brackets).
    pub host: String,
    pub port: u16,
    /// Value of the `Host` header: the URL's authority as written.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub target: Target,
    pub timeout: Duration,
}

/// Parses `http://host[:port][/path]`, or a bare port meaning
/// `http://127.0.0.1:<port>/health`.
pub fn parse_target(arg: &str) -> Result<Target, String> {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(arg)?;
        return parse_target(&format!("http://127.0.0.1:{port}/health"));
    }
    let rest = match arg.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &arg[7..],
        _ => return Err(format!("not an http:// URL or a port: {arg:?}")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("no usable host in {arg:?}"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("unclosed '[' in {arg:?}"))?;
        match after {
            "" => (host, 80),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, parse_port(port)?),
                None => return Err(format!("junk after ']' in {arg:?}")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (authority, 80),
        }
    };
    if host.is_empty() || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("not a usable URL: {arg:?}"));
    }
    Ok(Target { host: host.to_string(), port, authority: authority.to_string(), path })
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("not a port: {s:?}")),
    }
}

/// Command-line arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, String> {
    let mut url: Option<String> = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--timeout-ms" => {
                let value = args.next().ok_or("--timeout-ms needs a value")?;
                match value.parse::<u64>() {
                    Ok(ms) if ms > 0 => timeout = Duration::from_millis(ms),
                    _ => return Err(format!("--timeout-ms: not a positive integer: {value:?}")),
                }
            }
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    let target = parse_target(url.as_deref().unwrap_or(DEFAULT_URL))?;
    Ok(Options { target, timeout })
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
pub fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.trim_end_matches(['\r', '\n']).splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    let known_version = matches!(version, "HTTP/1.0" | "HTTP/1.1");
    if !known_version || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

/// Sends one `GET` and returns the answer's status code. Everything — name
/// resolution aside — happens within `timeout`.
pub fn probe(target: &Target, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {} ms", timeout.as_millis()))
    };
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last_error = format!("{} resolved to no address", target.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;
    let _ = stream.set_nodelay(true);

    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            buf.truncate(end);
            break;
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err("no status line in the first 1024 bytes".into());
        }
        stream.set_read_timeout(Some(left()?)).map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("connection closed without an answer".into()),
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("timed out after {} ms", timeout.as_millis()))
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    status_code(&line).ok_or_else(|| format!("not an HTTP/1.x status line: {:?}", truncate(&line, 80)))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16, authority: &str, path: &str) -> Target {
        Target { host: host.into(), port, authority: authority.into(), path: path.into() }
    }

    #[test]
    fn default_and_port_shorthand() {
        assert_eq!(parse_target(DEFAULT_URL).unwrap(), t("127.0.0.1", 8001, "127.0.0.1:8001", "/health"));
        assert_eq!(parse_target("9000").unwrap(), t("127.0.0.1", 9000, "127.0.0.1:9000", "/health"));
        assert!(parse_target("0").is_err());
        assert!(parse_target("70000").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_target("http://localhost").unwrap(), t("localhost", 80, "localhost", "/"));
        assert_eq!(parse_target("HTTP://h:81/a/b?c=1#frag").unwrap(), t("h", 81, "h:81", "/a/b?c=1"));
        assert_eq!(parse_target("http://h?x").unwrap(), t("h", 80, "h", "/?x"));
        assert_eq!(parse_target("http://[::1]:8001/health").unwrap(), t("::1", 8001, "[::1]:8001", "/health"));
        assert_eq!(parse_target("http://[::1]").unwrap(), t("::1", 80, "[::1]", "/"));
        for bad in [
            "https://h/",
            "h:80",
            "http://",
            "http://:80/",
            "http://h:x/",
            "http://u@h/",
            "http://[::1",
            "http://h/a b",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn args() {
        let parse = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        assert_eq!(
            parse(&[]).unwrap(),
            Options { target: parse_target(DEFAULT_URL).unwrap(), timeout: DEFAULT_TIMEOUT }
        );
        let o = parse(&["--timeout-ms", "250", "8080"]).unwrap();
        assert_eq!((o.target.port, o.timeout), (8080, Duration::from_millis(250)));
        for bad in [
            &["--timeout-ms"][..],
            &["--timeout-ms", "0"],
            &["--timeout-ms", "x"],
            &["8001", "8002"],
            &["--what"],
            &["--help"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 200"), Some(200));
        assert_eq!(status_code("HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        for bad in ["", "HTTP/1.1", "HTTP/2 200", "HTTP/1.1 20", "HTTP/1.1 2000 OK", "ICY 200 OK", "garbage"] {
            assert_eq!(status_code(bad), None, "{bad:?}");
        }
    }
}
