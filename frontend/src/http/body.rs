//! Bodies every API shares: the response body type, whole bodies in memory, a stored blob
//! streamed out through a small bounded channel (never more than a few chunks in memory), and
//! a request body read whole up to a limit, and how long a request body may stay idle.

use crate::store::BlobDir;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The response body type of every handler.
pub type RespBody = BoxBody<Bytes, std::io::Error>;

/// A whole body in memory (XML, errors).
pub fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> RespBody {
    full(Bytes::new())
}

/// How long a request body may send nothing before the request is refused (`[http]
/// idle_secs`, set once at start; 60 s until then).
static BODY_IDLE: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// Sets [`body_idle`] for the process (the first call wins).
pub fn set_body_idle(idle: std::time::Duration) {
    let _ = BODY_IDLE.set(idle);
}

/// How long a request body may send nothing.
pub fn body_idle() -> std::time::Duration {
    *BODY_IDLE.get_or_init(|| std::time::Duration::from_secs(60))
}

/// A request body read whole; refused (with the reason) past `limit` bytes, when it sends
/// nothing for [`body_idle`], or when the connection fails.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = http_body_util::Limited::new(body, limit);
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(body_idle(), body.frame()).await {
            Err(_) => {
                let secs = body_idle().as_secs();
                return Err(format!("the body sent nothing for {secs} s"));
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(format!("cannot read the body: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
}

const READ_CHUNK: usize = 256 << 10;
/// Bodies up to this size are read in one go, inline ([`BlobDir::read_at`] says why).
const INLINE_MAX: u64 = 64 << 10;

/// Streams `len` bytes of blob `id` from `offset`, read on a blocking thread (small bodies are
/// read at once, inline).
pub fn file_body(blobs: &BlobDir, id: &str, offset: u64, len: u64) -> std::io::Result<RespBody> {
    if len <= INLINE_MAX {
        return Ok(full(blobs.read_at(id, offset, len)?));
    }
    let mut file = std::fs::File::open(blobs.path(id))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        while left > 0 {
            let mut buf = vec![0u8; READ_CHUNK.min(left as usize)];
            let r = file.read(&mut buf);
            let msg = match r {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = msg.is_err();
            if tx.blocking_send(msg).is_err() || failed {
                return;
            }
        }
    });
    Ok(ChannelBody { rx, left: len }.boxed())
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    left: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                Poll::Ready(Some(Err(std::io::Error::other("blob reader stopped"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
