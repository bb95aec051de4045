//! Plain HTTP/1.1 requests for the WHIP and WHEP tests, and a WHEP player built on `rtc`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        let wanted = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&wanted))
            .map(|l| l[wanted.len()..].trim().to_owned())
    }

    pub fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 request, read to the end (`Connection: close`).
pub async fn request(
    relay: &tern::app::Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        relay.http_addr,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(relay.http_addr)
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the relay answers")
    .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A WHEP player on `rtc`: one receive-only audio and one video m-line, its own UDP socket, and
/// a task that records every RTP packet it receives (by mid) until it is dropped.
pub struct Player {
    /// `201` and the relay's answer, or the refusal.
    pub reply: Reply,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, super::Received)>>>,
    /// Set to have the player send a PLI for its video.
    pli: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Player {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Player {
    /// Offers to `POST /whep/{path}` (room and query) with `token`.
    pub async fn start(relay: &tern::app::Running, path: &str, token: &str) -> Player {
        use rtc::peer_connection::sdp::RTCSessionDescription;
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        let socket =
            tern::node::socket::bind_media_socket("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let now = std::time::Instant::now();
        let mut pc = tern::node::pair::client_peer_connection_with(
            now,
            &tern::node::pair::ClientSettings {
                video_mime_types: None,
                opus_fmtp: "minptime=10;useinbandfec=1",
                nack: true,
                srtp_profiles: None,
            },
        )
        .unwrap();
        pc.add_local_candidate(tern::node::engine::host_candidate(addr).unwrap())
            .unwrap();
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(kind, None).unwrap();
        }
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(now, offer).unwrap();
        let sdp = pc.local_description().unwrap().sdp;
        let auth = format!("Bearer {token}");
        let headers = [
            ("Content-Type", "application/sdp"),
            ("Authorization", auth.as_str()),
        ];
        let reply = request(
            relay,
            "POST",
            &format!("/whep/{path}"),
            &headers,
            sdp.as_bytes(),
        )
        .await;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pli = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut player = Player {
            reply,
            received: received.clone(),
            pli: pli.clone(),
            task: None,
        };
        if player.reply.status != 201 {
            return player;
        }
        let answer = RTCSessionDescription::answer(player.reply.body.clone()).unwrap();
        pc.set_remote_description(std::time::Instant::now(), answer)
            .unwrap();
        player.task = Some(tokio::spawn(play(pc, socket, addr, received, pli)));
        player
    }

    /// Sends a PLI (picture loss indication) for the video it receives.
    pub fn request_keyframe(&self) {
        self.pli.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The resource path from `Location`.
    pub fn location(&self) -> String {
        self.reply.header("location").unwrap_or_default()
    }

    /// Every RTP packet so far, with the mid it came on.
    pub fn received(&self) -> Vec<(String, super::Received)> {
        self.received.lock().unwrap().clone()
    }

    /// Packets so far whose synthetic payload came from `publisher` (its name) as `kind`.
    pub fn from(&self, publisher: &str, kind: &str) -> Vec<super::Received> {
        self.received()
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| super::tag(&r.payload).starts_with(&format!("{publisher}/{kind}/")))
            .collect()
    }

    /// Waits until `check` holds for what arrived.
    pub async fn wait(&self, what: &str, check: impl Fn(&Player) -> bool) {
        super::eventually(what, || check(self).then_some(())).await;
    }
}

async fn play(
    mut pc: rtc::peer_connection::RTCPeerConnection,
    socket: tokio::net::UdpSocket,
    addr: std::net::SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, super::Received)>>>,
    pli: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use rtc::peer_connection::message::RTCMessage;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::sansio::Protocol;
    let mut buf = vec![0u8; 2048];
    loop {
        if pli.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let video = received
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(_, r)| super::tag(&r.payload).contains("/video/"))
                .map(|(_, r)| r.ssrc);
            let receivers: Vec<_> = pc.get_receivers().collect();
            for id in receivers {
                if let (Some(ssrc), Some(mut r)) = (video, pc.rtp_receiver(id))
                    && r.track().ssrcs().any(|s| s == ssrc)
                {
                    let request = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                    let _ = r.write_rtcp(std::time::Instant::now(), vec![Box::new(request)]);
                }
            }
        }
        while let Some(message) = pc.poll_read() {
            if let RTCMessage::RtpPacket(track, packet) = message.message {
                let mid = pc
                    .get_transceivers()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .find_map(|id| {
                        let t = pc.rtp_transceiver(id)?;
                        let receiver = t.receiver()?;
                        let mid = t.mid().clone()?;
                        let r = pc.rtp_receiver(receiver)?;
                        r.track()
                            .ssrcs()
                            .any(|s| s == packet.header.ssrc)
                            .then_some(mid)
                    })
                    .unwrap_or_default();
                received.lock().unwrap().push((
                    mid,
                    super::Received {
                        track,
                        ssrc: packet.header.ssrc,
                        sequence_number: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        payload_type: packet.header.payload_type,
                        extension_ids: packet.header.extensions.iter().map(|e| e.id).collect(),
                        payload: packet.payload,
                    },
                ));
            }
        }
        while pc.poll_event().is_some() {}
        while let Some(out) = pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        let now = std::time::Instant::now();
        let next = pc
            .poll_timeout()
            .unwrap_or(now + std::time::Duration::from_millis(50))
            .max(now);
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = got {
                    let _ = pc.handle_read(tern::node::pair::datagram(
                        std::time::Instant::now(), from, addr, &buf[..n],
                    ));
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                let _ = pc.handle_timeout(std::time::Instant::now());
            }
        }
    }
}
