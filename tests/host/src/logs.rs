//! Captures what components write to stdout and stderr, line by line.
//!
//! The product logs one JSON line per request on stderr; tests read those lines back through
//! `RunningApp::logs()`. In serve mode the lines are also echoed to the host's own stderr
//! (stdout lines to stdout), unchanged, so they stay machine-readable.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::sync_imports::SyncImports;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub component: Arc<str>,
    pub stream: Stream,
    pub text: String,
}

/// All captured output of one app.
#[derive(Debug, Default)]
pub struct LogSink {
    lines: Mutex<Vec<LogLine>>,
    echo: bool,
}

impl LogSink {
    pub fn new(echo: bool) -> Arc<LogSink> {
        Arc::new(LogSink { lines: Mutex::default(), echo })
    }

    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether output is also printed (serve mode).
    pub fn echoes(&self) -> bool {
        self.echo
    }

    pub fn clear(&self) {
        self.lines.lock().unwrap().clear();
    }

    fn push(&self, component: &Arc<str>, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).trim_end_matches('\r').to_string();
        if self.echo {
            match stream {
                Stream::Stdout => println!("{text}"),
                Stream::Stderr => {
                    let _ = writeln!(std::io::stderr(), "{text}");
                }
            }
        }
        self.lines.lock().unwrap().push(LogLine { component: component.clone(), stream, text });
    }
}

/// The `StdoutStream` given to each instance's WASI context.
#[derive(Clone)]
pub struct CapturedOutput {
    pub sink: Arc<LogSink>,
    pub component: Arc<str>,
    pub stream: Stream,
    pub sync_imports: Arc<SyncImports>,
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { out: self.clone(), partial: Vec::new() })
    }

    /// WASIp2 writes are taken at once, as Spin's own stdout and stderr take them (a
    /// write under a lock): `blocking-write-and-flush` returns on its first poll. Each
    /// write is counted as a synchronous import.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(P2Writer(LineWriter { out: self.clone(), partial: Vec::new() }))
    }
}

/// The WASIp2 side of a [`CapturedOutput`].
struct P2Writer(LineWriter);

#[async_trait::async_trait]
impl Pollable for P2Writer {
    async fn ready(&mut self) {}
}

impl OutputStream for P2Writer {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.0.out.sync_imports.count("wasi:io/streams.[method]output-stream.blocking-write-and-flush");
        self.0.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// Splits writes into lines; `eprintln!` may arrive in several writes.
struct LineWriter {
    out: CapturedOutput,
    partial: Vec<u8>,
}

impl LineWriter {
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.out.sink.push(&self.out.component, self.out.stream, &line);
        }
    }
}

impl LineWriter {
    fn push(&mut self, buf: &[u8]) {
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            match chunk.strip_suffix(b"\n") {
                Some(end) => {
                    self.partial.extend_from_slice(end);
                    let line = std::mem::take(&mut self.partial);
                    self.out.sink.push(&self.out.component, self.out.stream, &line);
                }
                None => self.partial.extend_from_slice(chunk),
            }
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_are_reassembled_across_writes() {
        let sink = LogSink::new(false);
        let out = CapturedOutput {
            sink: sink.clone(),
            component: Arc::from("c"),
            stream: Stream::Stderr,
            sync_imports: Default::default(),
        };
        let mut w = Pin::from(out.async_stream());
        w.write_all(b"{\"a\":").await.unwrap();
        w.write_all(b"1}\nsecond\nthi").await.unwrap();
        drop(w);
        let lines: Vec<String> = sink.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(lines, vec!["{\"a\":1}", "second", "thi"]);
    }
}
