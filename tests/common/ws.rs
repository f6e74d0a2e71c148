//! Reading a raw WebSocket (tokio-tungstenite) the way the tests check the server's
//! frames: the next text frame as a JSON array, or the code the server closed with.

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The next text frame, as the JSON array it must be (pings and pongs skipped).
pub async fn frame<S>(ws: &mut WebSocketStream<S>) -> Vec<Value>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await.expect("socket open").expect("frame") {
            Frame::Text(t) => return serde_json::from_str(&t).expect("a JSON array"),
            Frame::Ping(_) | Frame::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The close frame's code, once the server closes (`None`: closed without one).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> Option<CloseCode>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Frame::Close(c)) => return c.map(|c| c.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}
