//! A TCP proxy on 127.0.0.1 that cuts connections: each connection is cut
//! (both directions dropped) once the client has sent a random number of
//! bytes in `cut_range`, until `cuts` connections have been cut; after that
//! it forwards everything. It notes the `Upload-Offset` of each request
//! head it forwards and of each response head it returns, in order.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What passed through, in the order it passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A request was sent from this offset.
    Sent(u64),
    /// The server answered with this offset.
    Acknowledged(u64),
    /// A connection was cut after the client sent this many bytes on it.
    Cut(u64),
}

pub struct CuttingProxy {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `upload-offset` value in the head at the start of `bytes`, if any.
fn offset_in_head(bytes: &[u8]) -> Option<u64> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    head.lines().find_map(|line| line.strip_prefix("upload-offset:")?.trim().parse().ok())
}

impl CuttingProxy {
    pub async fn start(upstream: std::net::SocketAddr, cuts: usize, cut_range: Range<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let left = Arc::new(Mutex::new(cuts));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                // Every connection draws its cut point; it is cut there only
                // while cuts are left then (a connection that idles in the
                // client's pool takes none from the others).
                let cut_at = Some(rand::thread_rng().gen_range(cut_range.clone()));
                tokio::spawn(relay(client, server, cut_at, record.clone(), left.clone()));
            }
        });
        Self { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Forwards one connection; cuts it after `cut_at` client bytes, if a cut is
/// left when it gets there.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    cut_at: Option<u64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    left: Arc<Mutex<usize>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward_seen = seen.clone();
    let upward = async move {
        let (mut sent, mut head) = (0u64, Vec::new());
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return (sent, false),
                Ok(n) => n,
            };
            let mut n = n as u64;
            let cut = cut_at.is_some_and(|at| sent + n >= at) && {
                let mut left = left.lock().unwrap();
                let take = *left > 0;
                if take {
                    *left -= 1;
                }
                take
            };
            if let Some(at) = cut_at.filter(|_| cut) {
                n = at - sent;
            }
            if head.len() < 8192 {
                let before = head.len();
                head.extend_from_slice(&buffer[..n as usize]);
                if offset_in_head(&head[..before]).is_none()
                    && let Some(offset) = offset_in_head(&head)
                {
                    upward_seen.lock().unwrap().push(Seen::Sent(offset));
                }
            }
            if server_write.write_all(&buffer[..n as usize]).await.is_err() {
                return (sent, false);
            }
            sent += n;
            if cut {
                return (sent, true);
            }
        }
    };
    let downward_seen = seen.clone();
    let downward = async move {
        let mut head = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if head.len() < 8192 {
                let before = head.len();
                head.extend_from_slice(&buffer[..n]);
                if offset_in_head(&head[..before]).is_none()
                    && let Some(offset) = offset_in_head(&head)
                {
                    downward_seen.lock().unwrap().push(Seen::Acknowledged(offset));
                }
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        (sent, cut) = upward => {
            if cut {
                seen.lock().unwrap().push(Seen::Cut(sent));
                // Both halves dropped: the connection is cut.
            }
        }
        () = downward => {}
    }
}
