//! Join tokens for the generated participants: minted here with an API key, as `tern token`
//! does, or fetched from a dev-mode relay's `/dev/token` (which answers loopback callers only).

use super::net;
use anyhow::{Context, bail};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tern_signaling::auth::{Grants, KeySet, claims_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub enum TokenSource {
    Mint {
        keys: KeySet,
        kid: String,
        ttl: Duration,
    },
    DevEndpoint {
        /// `host:port` of the relay's HTTP listener.
        authority: String,
    },
}

impl TokenSource {
    /// A token for `identity` in `room`; a dev token is fetched from `local` if given.
    pub async fn token(
        &self,
        room: &str,
        identity: &str,
        grants: Grants,
        local: Option<IpAddr>,
    ) -> anyhow::Result<String> {
        match self {
            TokenSource::Mint { keys, kid, ttl } => {
                let claims = claims_for(room, identity, identity, grants, SystemTime::now(), *ttl);
                keys.mint(kid, &claims)
                    .map_err(|e| anyhow::anyhow!("cannot sign with key {kid:?}: {e}"))
            }
            // The dev endpoint hands out participant grants whatever is asked; a subscriber that
            // may publish but does not is the same load.
            TokenSource::DevEndpoint { authority } => {
                dev_token(authority, room, identity, local).await
            }
        }
    }
}

async fn dev_token(
    authority: &str,
    room: &str,
    identity: &str,
    local: Option<IpAddr>,
) -> anyhow::Result<String> {
    let path = format!(
        "/dev/token?room={}&identity={}",
        query_escape(room),
        query_escape(identity)
    );
    let (status, body) = http_get(authority, &path, local)
        .await
        .with_context(|| format!("GET http://{authority}/dev/token"))?;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status != 200 {
        let code = json["code"].as_str().unwrap_or("?");
        if code == "dev_mode_off" {
            bail!(
                "the relay is not in dev mode: give its API key with --api-key/--api-secret \
                 (or TERN_API_KEY/TERN_API_SECRET)"
            );
        }
        bail!("GET /dev/token answered {status} {code}");
    }
    json["token"]
        .as_str()
        .map(str::to_owned)
        .context("/dev/token answered without a token")
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 GET with `Connection: close`; returns (status, body). Enough for the small JSON
/// answers of `/dev/token`, without an HTTP client crate.
async fn http_get(
    authority: &str,
    path: &str,
    local: Option<IpAddr>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = net::connect(authority, local).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("no answer within 10 s")?;
    if let Err(err) = read {
        bail!("{err}{}", net::closed_hint(&err));
    }
    if response.is_empty() {
        let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        bail!("closed without an answer{}", net::closed_hint(&closed));
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some(line_end) = body.find("\r\n") {
        let Ok(size) = usize::from_str_radix(body[..line_end].trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.push_str(body.get(start..start + size).unwrap_or_default());
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped() {
        assert_eq!(query_escape("load-1a2b-r0"), "load-1a2b-r0");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let keys = KeySet::new([("lt".to_owned(), vec![7u8; 32])]);
        let source = TokenSource::Mint {
            keys: keys.clone(),
            kid: "lt".into(),
            ttl: Duration::from_secs(60),
        };
        let token = source
            .token("room", "alice", Grants::participant(), None)
            .await
            .unwrap();
        let claims = keys.verify(&token, SystemTime::now()).unwrap();
        assert_eq!(
            (claims.room.as_str(), claims.sub.as_str()),
            ("room", "alice")
        );
    }
}
