//! Cryptokey routing table: which peer owns an inner IP address.
//!
//! Used in both directions: an inbound packet's source must map back to the
//! peer that sent it, and an outbound packet's destination picks the peer to
//! encrypt for. Overlaps are refused by config validation, so the longest
//! match is also the only match.
//!
//! Lookup is one hash probe per distinct prefix length in the table (almost
//! always one: peers get /32 or /128), so it stays O(1) for 10,000 peers and
//! never allocates.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Maps prefixes to a value (a peer slot).
#[derive(Debug, Clone)]
pub(crate) struct AllowedIps<T> {
    entries: HashMap<(u8, IpAddr), T>,
    /// Distinct (is_ipv6, prefix_len) pairs present, longest first.
    lengths: Vec<(bool, u8)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            entries: HashMap::new(),
            lengths: Vec::new(),
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Inserts `net -> value`, replacing any value with exactly this prefix.
    pub(crate) fn insert(&mut self, net: IpNet, value: T) {
        let net = net.trunc();
        let key = (is_v6(&net.addr()), net.prefix_len());
        self.entries.insert((net.prefix_len(), net.addr()), value);
        if !self.lengths.contains(&key) {
            self.lengths.push(key);
            self.lengths.sort_by_key(|l| std::cmp::Reverse(l.1));
        }
    }

    /// Removes every prefix that maps to `value`.
    pub(crate) fn remove_value(&mut self, value: T) {
        self.entries.retain(|_, v| *v != value);
        let entries = &self.entries;
        self.lengths
            .retain(|(v6, len)| entries.keys().any(|(l, a)| l == len && is_v6(a) == *v6));
    }

    /// The value whose prefix contains `addr`, longest prefix first.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<T> {
        let v6 = is_v6(&addr);
        for &(len_v6, len) in &self.lengths {
            if len_v6 != v6 {
                continue;
            }
            let masked = match IpNet::new(addr, len) {
                Ok(net) => net.trunc().addr(),
                Err(_) => continue,
            };
            if let Some(v) = self.entries.get(&(len, masked)) {
                return Some(*v);
            }
        }
        None
    }
}

fn is_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_families_are_separate() {
        let mut t = AllowedIps::new();
        t.insert(net("10.13.13.2/32"), 1);
        t.insert(net("10.13.0.0/16"), 2);
        t.insert(net("fd00::2/128"), 3);
        assert_eq!(t.lookup(ip("10.13.13.2")), Some(1));
        assert_eq!(t.lookup(ip("10.13.99.1")), Some(2));
        assert_eq!(t.lookup(ip("10.14.0.1")), None);
        assert_eq!(t.lookup(ip("fd00::2")), Some(3));
        assert_eq!(t.lookup(ip("fd00::3")), None);
    }

    #[test]
    fn host_bits_in_prefix_are_ignored() {
        let mut t = AllowedIps::new();
        t.insert(net("10.13.13.77/24"), 7);
        assert_eq!(t.lookup(ip("10.13.13.1")), Some(7));
    }

    #[test]
    fn remove_value_removes_all_its_prefixes() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.2/32"), 1);
        t.insert(net("10.1.0.0/16"), 1);
        t.insert(net("10.0.0.3/32"), 2);
        t.remove_value(1);
        assert_eq!(t.lookup(ip("10.0.0.2")), None);
        assert_eq!(t.lookup(ip("10.1.2.3")), None);
        assert_eq!(t.lookup(ip("10.0.0.3")), Some(2));
        // The /16 is gone from the lengths a lookup probes, too.
        assert_eq!(t.lengths, [(false, 32)]);
    }

    #[test]
    fn default_route_matches_everything_in_family() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 9);
        assert_eq!(t.lookup(ip("203.0.113.9")), Some(9));
        assert_eq!(t.lookup(ip("::1")), None);
    }
}
