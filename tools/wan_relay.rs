//! A UDP relay that makes a WAN out of a LAN: every datagram is held for a
//! fixed one-way delay (FIFO, so order is kept) and a configured share is
//! dropped at random, independently in each direction. The machines here
//! have no `netem` qdisc, so `scripts/bench --wan` puts this relay between
//! the client and each gateway, with the same settings for both.
//!
//! ```text
//! wan_relay --listen 0.0.0.0:51830 --forward 127.0.0.1:51820 \
//!           --delay-ms 25 --loss 0.1 [--seed 1]
//! ```
//!
//! `--delay-ms` is one way (RTT = 2 × delay); `--loss` is a percentage per
//! direction. Replies go to the address the last client datagram came from.
//! Built with `cargo build --release -p promgate-tools --bin wan_relay`.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    listen: SocketAddr,
    forward: SocketAddr,
    delay: Duration,
    loss: f64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut forward = None;
    let mut delay = Duration::ZERO;
    let mut loss = 0.0;
    let mut seed = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--forward" => forward = Some(value.parse().map_err(|e| bad(&e))?),
            "--delay-ms" => {
                delay = Duration::from_secs_f64(value.parse::<f64>().map_err(|e| bad(&e))? / 1e3)
            }
            "--loss" => loss = value.parse::<f64>().map_err(|e| bad(&e))? / 100.0,
            "--seed" => seed = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        forward: forward.ok_or("--forward is required")?,
        delay,
        loss,
        seed,
    })
}

/// xorshift64*: a fast, seeded, good-enough coin for drops.
struct Coin(u64);
impl Coin {
    fn lands(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Socket buffers big enough for a bandwidth-delay product in flight.
fn big_buffers(s: &UdpSocket) {
    let s = socket2::SockRef::from(s);
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
}

/// Moves datagrams from `from` to wherever `to` says, each after `delay`.
fn pump(
    from: UdpSocket,
    out: UdpSocket,
    to: impl Fn(SocketAddr) -> Option<SocketAddr>,
    delay: Duration,
    loss: f64,
    mut coin: Coin,
) {
    let mut queue: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        while let Some((due, dst, _)) = queue.front() {
            if *due > now {
                break;
            }
            let dst = *dst;
            if let Some((_, _, d)) = queue.pop_front() {
                let _ = out.send_to(&d, dst);
            }
        }
        let wait = queue
            .front()
            .map(|(due, _, _)| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_micros(50));
        let _ = from.set_read_timeout(Some(wait));
        match from.recv_from(&mut buf) {
            Ok((n, src)) => {
                if coin.lands(loss) {
                    continue;
                }
                if let Some(dst) = to(src) {
                    queue.push_back((Instant::now() + delay, dst, buf[..n].to_vec()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                eprintln!("wan_relay: receive failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wan_relay: {e}");
            std::process::exit(2);
        }
    };
    let client_side = UdpSocket::bind(args.listen).unwrap_or_else(|e| {
        eprintln!("wan_relay: binding {}: {e}", args.listen);
        std::process::exit(1)
    });
    let any: SocketAddr = if args.forward.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(args.listen)
    } else {
        "[::]:0".parse().unwrap_or(args.listen)
    };
    let server_side = UdpSocket::bind(any).unwrap_or_else(|e| {
        eprintln!("wan_relay: binding the forwarding socket: {e}");
        std::process::exit(1)
    });
    big_buffers(&client_side);
    big_buffers(&server_side);
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let (c_in, c_out, s_in, s_out) = match (
        client_side.try_clone(),
        server_side.try_clone(),
        server_side.try_clone(),
        client_side.try_clone(),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            eprintln!("wan_relay: cannot clone sockets");
            std::process::exit(1)
        }
    };
    eprintln!(
        "wan_relay: {} -> {}, one-way delay {:?}, loss {}% each way",
        args.listen,
        args.forward,
        args.delay,
        args.loss * 100.0
    );
    let seen = client.clone();
    let forward = args.forward;
    let (delay, loss, seed) = (args.delay, args.loss, args.seed);
    let up = std::thread::spawn(move || {
        pump(
            c_in,
            c_out,
            move |src| {
                if let Ok(mut c) = seen.lock() {
                    *c = Some(src);
                }
                Some(forward)
            },
            delay,
            loss,
            Coin(seed | 1),
        )
    });
    let down = std::thread::spawn(move || {
        pump(
            s_in,
            s_out,
            move |_| client.lock().ok().and_then(|c| *c),
            delay,
            loss,
            Coin((seed ^ 0x9E37_79B9_7F4A_7C15) | 1),
        )
    });
    let _ = up.join();
    let _ = down.join();
}
