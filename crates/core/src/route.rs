//! Cryptokey routing and isolation for decrypted inner packets.
//!
//! boringtun authenticates the sender but checks nothing about the inner
//! packet. Here, before the userspace TCP/IP stack sees anything, a packet
//! must: parse as IPv4 or IPv6; come from an address inside the sending
//! peer's AllowedIPs; be addressed to one of the gateway's own tunnel
//! addresses; and be TCP to a served port or an ICMP echo request. So a peer
//! can reach the gateway's HTTP port and ping it, and nothing else: there is
//! no forwarding, so one peer can never reach another.

use crate::peer::PeerId;
use crate::stats::DropReason;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use std::net::IpAddr;

/// What an inner packet that passed [`check_inbound`] is, for the netstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// TCP to a served port; `syn` is set for a connection-opening segment
    /// (SYN without ACK), so the netstack can prepare a listening socket.
    Tcp {
        src: IpAddr,
        src_port: u16,
        dst_port: u16,
        syn: bool,
    },
    /// An ICMP or ICMPv6 echo request.
    Ping,
}

/// What a peer may address, borrowed from the gateway: its tunnel
/// addresses and the ports it serves.
pub(crate) struct Destinations<'a> {
    pub(crate) gateway_addrs: &'a [IpAddr],
    pub(crate) http_ports: &'a [u16],
}

/// The smallest MSS a connection may announce: IPv4's minimum datagram
/// (576) less the headers. Smaller segments only multiply the datagrams,
/// encryptions and wake-ups per byte sent.
pub(crate) const MIN_MSS: u16 = 536;

/// The MSS option of a SYN's options, if it has a well-formed one.
fn announced_mss(mut options: &[u8]) -> Option<u16> {
    use smoltcp::wire::TcpOption;
    while !options.is_empty() {
        let (rest, option) = TcpOption::parse(options).ok()?;
        match option {
            TcpOption::EndOfList => return None,
            TcpOption::MaxSegmentSize(m) => return Some(m),
            _ => options = rest,
        }
    }
    None
}

/// Checks one decrypted packet from `peer`. `owner_of` is the AllowedIPs
/// lookup (cryptokey routing table).
pub(crate) fn check_inbound(
    destinations: &Destinations<'_>,
    peer: PeerId,
    packet: &[u8],
    owner_of: impl Fn(IpAddr) -> Option<PeerId>,
) -> Result<Admitted, DropReason> {
    let (src, dst, proto, payload): (IpAddr, IpAddr, IpProtocol, &[u8]) =
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::MalformedInner)?;
                if !ip.verify_checksum() {
                    return Err(DropReason::MalformedInner);
                }
                // No reassembly: fragments of a TCP segment never happen below our MSS.
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return Err(DropReason::MalformedInner);
                }
                let header = usize::from(ip.header_len());
                let total = usize::from(ip.total_len());
                (
                    IpAddr::V4(ip.src_addr()),
                    IpAddr::V4(ip.dst_addr()),
                    ip.next_header(),
                    &packet[header..total],
                )
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::MalformedInner)?;
                let total = ip.total_len();
                (
                    IpAddr::V6(ip.src_addr()),
                    IpAddr::V6(ip.dst_addr()),
                    ip.next_header(),
                    &packet[40..total],
                )
            }
            _ => return Err(DropReason::MalformedInner),
        };
    if owner_of(src) != Some(peer) {
        return Err(DropReason::SpoofedSource);
    }
    if !destinations.gateway_addrs.contains(&dst) {
        return Err(DropReason::WrongDestination);
    }
    match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| DropReason::MalformedInner)?;
            let dst_port = tcp.dst_port();
            if !destinations.http_ports.contains(&dst_port) {
                return Err(DropReason::ForbiddenPort);
            }
            let syn = tcp.syn() && !tcp.ack();
            if syn && announced_mss(tcp.options()).is_some_and(|m| m < MIN_MSS) {
                return Err(DropReason::TinyMss);
            }
            Ok(Admitted::Tcp {
                src,
                src_port: tcp.src_port(),
                dst_port,
                syn,
            })
        }
        // Type 8 is echo request; smoltcp answers it itself.
        IpProtocol::Icmp if payload.first() == Some(&8) => Ok(Admitted::Ping),
        // Type 128 is ICMPv6 echo request.
        IpProtocol::Icmpv6 if payload.first() == Some(&128) => Ok(Admitted::Ping),
        _ => Err(DropReason::ForbiddenProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};
    use std::net::Ipv4Addr;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 1);
    const ALICE: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 2);
    const BOB: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 3);

    /// A bare TCP segment from port 40000, for the packet builders below.
    fn tcp_repr(dst_port: u16, control: TcpControl) -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port,
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: None,
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        }
    }

    fn tcp_packet(src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16, control: TcpControl) -> Vec<u8> {
        crate::test_packets::ipv4_tcp(src, dst, &tcp_repr(dst_port, control))
    }

    fn raw_ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: proto,
            payload_len: payload.len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + payload.len()];
        let mut p = Ipv4Packet::new_unchecked(&mut buf);
        ip.emit(&mut p, &ChecksumCapabilities::default());
        p.payload_mut().copy_from_slice(payload);
        buf
    }

    fn check(peer: PeerId, packet: &[u8]) -> Result<Admitted, DropReason> {
        let addrs = [IpAddr::V4(GW)];
        let destinations = Destinations {
            gateway_addrs: &addrs,
            http_ports: &[80],
        };
        check_inbound(&destinations, peer, packet, |a| match a {
            IpAddr::V4(a) if a == ALICE => Some(1),
            IpAddr::V4(a) if a == BOB => Some(2),
            _ => None,
        })
    }

    #[test]
    fn table() {
        type Case = (&'static str, PeerId, Vec<u8>, Result<(), DropReason>);
        let cases: Vec<Case> = vec![
            (
                "syn to served port",
                1,
                tcp_packet(ALICE, GW, 80, TcpControl::Syn),
                Ok(()),
            ),
            (
                "spoofed source (bob's address from alice)",
                1,
                tcp_packet(BOB, GW, 80, TcpControl::Syn),
                Err(DropReason::SpoofedSource),
            ),
            (
                "source outside every AllowedIPs",
                1,
                tcp_packet(Ipv4Addr::new(10, 9, 9, 9), GW, 80, TcpControl::Syn),
                Err(DropReason::SpoofedSource),
            ),
            (
                "peer to peer",
                1,
                tcp_packet(ALICE, BOB, 80, TcpControl::Syn),
                Err(DropReason::WrongDestination),
            ),
            (
                "to the internet",
                1,
                tcp_packet(ALICE, Ipv4Addr::new(1, 1, 1, 1), 443, TcpControl::Syn),
                Err(DropReason::WrongDestination),
            ),
            (
                "unserved port",
                1,
                tcp_packet(ALICE, GW, 9090, TcpControl::Syn),
                Err(DropReason::ForbiddenPort),
            ),
            (
                "udp",
                1,
                raw_ipv4(ALICE, GW, IpProtocol::Udp, &[0; 8]),
                Err(DropReason::ForbiddenProtocol),
            ),
            (
                "icmp echo",
                1,
                raw_ipv4(ALICE, GW, IpProtocol::Icmp, &[8, 0, 0, 0, 0, 0, 0, 0]),
                Ok(()),
            ),
            (
                "icmp other",
                1,
                raw_ipv4(ALICE, GW, IpProtocol::Icmp, &[13, 0, 0, 0, 0, 0, 0, 0]),
                Err(DropReason::ForbiddenProtocol),
            ),
            (
                "garbage",
                1,
                vec![0x45, 0, 0],
                Err(DropReason::MalformedInner),
            ),
            ("empty", 1, vec![], Err(DropReason::MalformedInner)),
            (
                "ip version 7",
                1,
                vec![0x70; 40],
                Err(DropReason::MalformedInner),
            ),
        ];
        for (name, peer, packet, want) in cases {
            let got = check(peer, &packet).map(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn bad_ipv4_checksum_is_malformed() {
        let mut p = tcp_packet(ALICE, GW, 80, TcpControl::Syn);
        p[10] ^= 0xff;
        assert_eq!(check(1, &p), Err(DropReason::MalformedInner));
    }

    #[test]
    fn syn_is_flagged() {
        let got = check(1, &tcp_packet(ALICE, GW, 80, TcpControl::Syn)).unwrap();
        assert!(matches!(
            got,
            Admitted::Tcp {
                syn: true,
                dst_port: 80,
                ..
            }
        ));
        let got = check(1, &tcp_packet(ALICE, GW, 80, TcpControl::None)).unwrap();
        assert!(matches!(got, Admitted::Tcp { syn: false, .. }));
    }

    #[test]
    fn a_syn_with_a_tiny_mss_is_dropped_and_counted() {
        let syn_with = |mss: Option<u16>| {
            let mut repr = tcp_repr(80, TcpControl::Syn);
            repr.max_seg_size = mss;
            crate::test_packets::ipv4_tcp(ALICE, GW, &repr)
        };
        assert_eq!(check(1, &syn_with(Some(48))), Err(DropReason::TinyMss));
        assert_eq!(check(1, &syn_with(Some(535))), Err(DropReason::TinyMss));
        assert!(check(1, &syn_with(Some(536))).is_ok());
        assert!(check(1, &syn_with(Some(1380))).is_ok());
        assert!(check(1, &syn_with(None)).is_ok());
    }

    #[test]
    fn never_panics_on_truncations() {
        let p = tcp_packet(ALICE, GW, 80, TcpControl::Syn);
        for n in 0..p.len() {
            let _ = check(1, &p[..n]);
        }
    }

    #[test]
    fn ipv6_inner_packets_follow_the_same_rules() {
        use smoltcp::wire::Ipv6Address;
        let gw: Ipv6Address = "fd13::1".parse().unwrap();
        let alice: Ipv6Address = "fd13::2".parse().unwrap();
        let bob: Ipv6Address = "fd13::3".parse().unwrap();
        let packet = |src: Ipv6Address, dst: Ipv6Address, port: u16| {
            crate::test_packets::ipv6_tcp(src, dst, &tcp_repr(port, TcpControl::Syn))
        };
        let addrs = [IpAddr::V6(gw)];
        let destinations = Destinations {
            gateway_addrs: &addrs,
            http_ports: &[80],
        };
        let owner = |a: IpAddr| (a == IpAddr::V6(alice)).then_some(1);
        assert!(matches!(
            check_inbound(&destinations, 1, &packet(alice, gw, 80), owner),
            Ok(Admitted::Tcp { syn: true, .. })
        ));
        assert_eq!(
            check_inbound(&destinations, 1, &packet(bob, gw, 80), owner),
            Err(DropReason::SpoofedSource)
        );
        assert_eq!(
            check_inbound(&destinations, 1, &packet(alice, bob, 80), owner),
            Err(DropReason::WrongDestination)
        );
        assert_eq!(
            check_inbound(&destinations, 1, &packet(alice, gw, 22), owner),
            Err(DropReason::ForbiddenPort)
        );
    }
}
