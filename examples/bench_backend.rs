//! A minimal HTTP health backend for the probe-scale benchmark: answers
//! `200 ok` to every request on one port, for every loopback address
//! (bound to 0.0.0.0, so 127.1.0.1 ... 127.1.39.16 all reach it). It keeps
//! connections open between requests (HTTP/1.1 keep-alive, as nginx and
//! most servers do) unless the request says `Connection: close`.
//!
//!     cargo run --release --example bench_backend -- 18090

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18090);
    // A deep accept queue: 10,000 probers connecting within the first
    // second overflowed tokio's default of 1,024 (TcpExtListenOverflows).
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([0, 0, 0, 0], port).into())?;
    let l = socket.listen(8192)?;
    eprintln!("bench backend on 0.0.0.0:{port}");
    loop {
        let (mut s, _) = match l.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                let mut seen = 0;
                loop {
                    match s.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                    if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") || seen == buf.len() {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..seen]).to_ascii_lowercase();
                let close = head.contains("connection: close");
                if s.write_all(if close { CLOSE } else { KEEP }).await.is_err() || close {
                    return;
                }
            }
        });
    }
}
