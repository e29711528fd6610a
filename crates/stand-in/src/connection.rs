//! One client connection: read requests, route them, and carry out the chosen answer on the
//! socket, faults included.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::behavior::{Answer, Ending, PaddedJson, Response, TRICKLE_BODY_LEN};
use super::http::{read_more, read_request, write_head, write_response, Incoming, Refusal};
use super::State;

/// Chunk size when streaming `HugeBody`.
const STREAM_CHUNK: usize = 64 * 1024;

pub(crate) async fn serve_connection<S>(mut stream: S, state: Arc<State>, connection_id: u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(1024);
    // Only from the first answer on, as in Node (other timeouts bound the wait for the first
    // request there).
    let mut keep_alive_timeout = None;
    loop {
        if let Some(idle) = keep_alive_timeout.filter(|_| buffer.is_empty()) {
            match tokio::time::timeout(idle, read_more(&mut stream, &mut buffer)).await {
                Ok(Ok(read)) if read > 0 => {}
                // Idle too long, or the client left: dropping the stream closes it (a FIN, no
                // answer), as Node does.
                _ => return,
            }
        }
        let (request, keep_alive) =
            match read_request(&mut stream, &mut buffer, connection_id).await {
                Ok(Incoming::Request {
                    request,
                    keep_alive,
                }) => (request, keep_alive),
                Ok(Incoming::Refused(Refusal { status, message })) => {
                    let response = Response::json(status, serde_json::json!({ "error": message }));
                    write_response(&mut out, &response, false);
                    // The connection is closed next anyway: a failed write changes nothing.
                    if send(&mut stream, &mut out).await.is_ok() {
                        let _ = stream.shutdown().await;
                    }
                    return;
                }
                Ok(Incoming::Closed) | Err(_) => return,
            };
        keep_alive_timeout = state.keep_alive_timeout();
        let _answering = state.begin_answer();
        let arrived = Instant::now();
        let planned = state.plan(&request);
        state.note_received(request);

        let mut place = None;
        if let Some(gate) = state.capacity() {
            let Some(mut admitted) = gate.admit() else {
                let mut refusal = Response::json(
                    429,
                    serde_json::json!({ "success": false, "error": "Too many requests" }),
                );
                if let Some(after) = &gate.retry_after {
                    refusal.headers.push(("Retry-After".into(), after.clone()));
                }
                match carry_out(&mut stream, &mut out, Answer::Respond(refusal), keep_alive).await {
                    Ok(Connection::KeepOpen) => continue,
                    Ok(Connection::Close) | Err(_) => return,
                }
            };
            admitted.serve().await;
            place = Some(admitted);
        }
        let wait = state.latency() + planned.delay;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(admitted) = place {
            admitted.served(arrived.elapsed());
        }
        match carry_out(&mut stream, &mut out, planned.answer, keep_alive).await {
            Ok(Connection::KeepOpen) => {}
            Ok(Connection::Close) | Err(_) => return,
        }
    }
}

/// Whether the connection can carry another request after an answer.
enum Connection {
    KeepOpen,
    Close,
}

async fn carry_out<S>(
    stream: &mut S,
    out: &mut Vec<u8>,
    answer: Answer,
    keep_alive: bool,
) -> io::Result<Connection>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let after = if keep_alive {
        Connection::KeepOpen
    } else {
        Connection::Close
    };
    match answer {
        Answer::Respond(response) => {
            write_response(out, &response, keep_alive);
            send(stream, out).await?;
            if !keep_alive {
                // A clean end (TLS close_notify, FIN), unlike the deliberate faults below.
                stream.shutdown().await?;
            }
            Ok(after)
        }
        Answer::Hang => {
            hold_until_client_leaves(stream).await;
            Ok(Connection::Close)
        }
        Answer::Close => Ok(Connection::Close),
        Answer::Unfinished {
            response,
            declared,
            ending,
        } => {
            write_head(
                out,
                response.status,
                &response.content_type,
                declared,
                &response.headers,
                true,
            );
            out.extend_from_slice(&response.body);
            send(stream, out).await?;
            if let Ending::Hang = ending {
                hold_until_client_leaves(stream).await;
            }
            Ok(Connection::Close)
        }
        Answer::Trickle { interval } => {
            let body = PaddedJson::new(TRICKLE_BODY_LEN);
            write_head(out, 200, "application/json", body.len(), &[], keep_alive);
            send(stream, out).await?;
            for position in 0..body.len() {
                tokio::time::sleep(interval).await;
                stream.write_all(&[body.byte_at(position)]).await?;
                stream.flush().await?;
            }
            Ok(after)
        }
        Answer::HugeBody { bytes } => {
            write_head(out, 200, "application/json", bytes, &[], keep_alive);
            send(stream, out).await?;
            stream_padded_json(stream, bytes).await?;
            Ok(after)
        }
    }
}

/// Writes and clears `out`.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    let written = stream.write_all(out).await;
    out.clear();
    written?;
    stream.flush().await
}

/// Streams a `len`-byte JSON document in chunks; a write error (client gone) ends it.
async fn stream_padded_json<S: AsyncWrite + Unpin>(stream: &mut S, len: u64) -> io::Result<()> {
    let body = PaddedJson::new(len);
    let mut chunk = vec![0; STREAM_CHUNK];
    let mut offset = 0;
    while offset < len {
        let piece = &mut chunk[..STREAM_CHUNK.min((len - offset) as usize)];
        body.fill(offset, piece);
        stream.write_all(piece).await?;
        offset += piece.len() as u64;
    }
    stream.flush().await
}

/// Reads and discards until the client closes the connection or it fails.
async fn hold_until_client_leaves<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0; 1024];
    while let Ok(read) = stream.read(&mut sink).await {
        if read == 0 {
            return;
        }
    }
}
