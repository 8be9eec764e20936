//! A handshake flood for the fault suite: WireGuard initiations from keys
//! the gateway does not know, each with a valid MAC1 (it needs only the
//! gateway's public key), sent at a fixed rate for a fixed time.
//!
//! ```text
//! cargo run --release --example handshake_flood -- GATEWAY_PUBLIC_KEY HOST:PORT RATE SECONDS [--cookie]
//! ```
//!
//! With `--cookie` the flooder first collects one cookie reply, then sends
//! one initiation carrying that cookie (a valid MAC2) over and over: the
//! cheapest attack on a gateway that trusts MAC2 alone, which a per-source
//! token bucket must absorb.
//!
//! Making an initiation costs two Diffie-Hellman operations, so a pool of
//! distinct initiations is made first and then sent round-robin: every one
//! still passes the MAC1 check, which is what makes the gateway spend work
//! (or, under load, answer with a cookie reply). Prints what was sent and how
//! many cookie replies came back.
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const POOL: usize = 2000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cookie_mode, args) = match args.split_last() {
        Some((last, rest)) if last == "--cookie" => (true, rest),
        _ => (false, &args[..]),
    };
    let [key, target, rate, secs] = args else {
        anyhow::bail!(
            "usage: handshake_flood GATEWAY_PUBLIC_KEY HOST:PORT RATE SECONDS [--cookie]"
        );
    };
    let gateway = PublicKey::from(promgate_core::keys::decode_key(key)?);
    let rate: u64 = rate.parse()?;
    let secs: u64 = secs.parse()?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(target)?;
    let pool = if cookie_mode {
        vec![initiation_with_cookie(&sock, gateway)?]
    } else {
        let mut pool = Vec::with_capacity(POOL);
        let mut buf = vec![0u8; 256];
        for i in 0..POOL {
            let mut t = Tunn::new(StaticSecret::random(), gateway, None, None, i as u32, None);
            if let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) {
                pool.push(d.to_vec());
            }
        }
        pool
    };
    sock.set_nonblocking(true)?;
    // Send in batches every 5 ms: 100 per batch at 20,000/s.
    let tick = Duration::from_millis(5);
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut sent, mut failed, mut cookies, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut next = start;
    let mut rx = [0u8; 256];
    while Instant::now() < end {
        for _ in 0..per_tick {
            match sock.send(&pool[(sent + failed) as usize % pool.len()]) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        while let Ok(n) = sock.recv(&mut rx) {
            if n == 64 && rx[0] == 3 {
                cookies += 1;
            } else {
                other += 1;
            }
        }
        next += tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} send_errors={failed} seconds={elapsed:.2} rate={:.0} cookie_replies={cookies} other_replies={other}",
        sent as f64 / elapsed
    );
    Ok(())
}

/// Sends initiations from one key until the gateway, under load, answers
/// with a cookie reply; returns an initiation that carries the cookie.
fn initiation_with_cookie(sock: &UdpSocket, gateway: PublicKey) -> anyhow::Result<Vec<u8>> {
    let mut t = Tunn::new(StaticSecret::random(), gateway, None, None, 1, None);
    let mut buf = vec![0u8; 256];
    let mut rx = [0u8; 256];
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) {
            sock.send(d)?;
        }
        let Ok(n) = sock.recv(&mut rx) else { continue };
        if n == 64 && rx[0] == 3 {
            // Stores the cookie; the next initiation carries it as MAC2.
            // A reply to an earlier initiation than the last fails here.
            if let TunnResult::Err(_) = t.decapsulate(None, &rx[..n], &mut buf) {
                continue;
            }
            if let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) {
                return Ok(d.to_vec());
            }
        }
    }
    anyhow::bail!("no cookie reply within 10 s: the gateway never went under load")
}
