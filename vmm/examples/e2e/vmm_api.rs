//! One request to a running `mallee-vmm`'s control socket and its reply, for the node-side
//! programs (`e2e_node`, `ebs_node`): the `mallee_proto::vmm` types both sides share, one JSON
//! line each way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use mallee_proto::vmm::{encode_line, Reply, Request};

/// Sends `request` to the VMM listening on `socket` and reads its reply.
pub fn call(socket: &str, request: &Request) -> Result<Reply, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
    s.write_all(&encode_line(request))
        .map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read reply: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("reply {line:?}: {e}"))
}
