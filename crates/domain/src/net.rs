//! Who is on the other end of a connection, and how many of them there may
//! be: address ranges ([`Cidr`]), the client's address behind trusted proxies
//! ([`client_address`]), and counted admission ([`Gate`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::ValidationError;

/// An address range, such as `10.0.0.0/8` or `::1/128`; a bare address is a
/// range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "cidr",
                format!("{text:?} is not an address or a range such as 10.0.0.0/8"),
            )
        };
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            None => bits,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: `peer` itself unless `peer` is one of `trusted`;
/// then the proxies' own account of whom they forwarded for, read from the
/// right (the nearest proxy) past every trusted address. `forwarded` is the
/// `Forwarded` header's value and `x_forwarded_for` the `X-Forwarded-For`
/// one (`Forwarded` wins when both are there). What a client wrote itself,
/// to the left of the first untrusted address, is never believed.
pub fn client_address(
    peer: IpAddr,
    trusted: &[Cidr],
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |a: IpAddr| trusted.iter().any(|c| c.contains(a));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => f.split(',').filter_map(forwarded_for).collect(),
        (None, Some(x)) => x.split(',').filter_map(|a| hop(a.trim())).collect(),
        (None, None) => Vec::new(),
    };
    let mut client = peer;
    for address in hops.into_iter().rev() {
        client = canonical(address);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The `for=` of one element of a `Forwarded` header.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| hop(value.trim().trim_matches('"')))?
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:5678`
/// or `::1`.
fn hop(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

/// Why a [`Gate`] turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The limit on connections in all.
    Total,
    /// The limit on connections from one address.
    Address,
}

impl Full {
    pub fn as_str(self) -> &'static str {
        match self {
            Full::Total => "total",
            Full::Address => "per_address",
        }
    }
}

/// Counts open connections, in all and per address, and admits one only
/// under both limits. What it admits is a [`Pass`], which gives its place
/// back when dropped. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct Gate {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_address: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_address,
        }
    }

    /// A place for a connection from `address`; `None` counts it in the total
    /// only (a trusted proxy carries many clients).
    pub fn admit(&self, address: Option<IpAddr>) -> Result<Pass, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Full::Total);
        }
        if let Some(address) = address {
            let open = counts.per_address.entry(address).or_insert(0);
            if *open >= self.max_per_address {
                return Err(Full::Address);
            }
            *open += 1;
        }
        counts.total += 1;
        Ok(Pass {
            counts: self.counts.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// A connection's place at a [`Gate`].
pub struct Pass {
    counts: Arc<Mutex<Counts>>,
    address: Option<IpAddr>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(open) = counts.per_address.get_mut(&address)
        {
            *open -= 1;
            if *open == 0 {
                counts.per_address.remove(&address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy").is_err());
    }

    #[test]
    fn the_client_is_read_behind_trusted_proxies_only() {
        let trusted = [
            Cidr::parse("127.0.0.0/8").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        // An untrusted peer's headers are its own invention.
        assert_eq!(
            client_address(ip("1.2.3.4"), &trusted, None, Some("9.9.9.9")),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &trusted, None, Some("9.9.9.9, 5.6.7.8")),
            ip("5.6.7.8")
        );
        // A second trusted proxy is looked through.
        assert_eq!(
            client_address(ip("127.0.0.1"), &trusted, None, Some("5.6.7.8, 10.0.0.2")),
            ip("5.6.7.8")
        );
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &trusted,
                Some("for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3"),
                Some("7.7.7.7")
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &trusted, None, Some("5.6.7.8:1234")),
            ip("5.6.7.8")
        );
        // Nothing said: the proxy itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), &trusted, None, None),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &trusted, None, Some("garbage")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_gate_counts_in_all_and_per_address() {
        let gate = Gate::new(3, 2);
        let a = gate.admit(Some(ip("1.1.1.1"))).unwrap();
        let _b = gate.admit(Some(ip("1.1.1.1"))).unwrap();
        assert_eq!(gate.admit(Some(ip("1.1.1.1"))).err(), Some(Full::Address));
        let _c = gate.admit(None).unwrap();
        assert_eq!(gate.admit(Some(ip("2.2.2.2"))).err(), Some(Full::Total));
        drop(a);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(Some(ip("1.1.1.1"))).is_ok());
    }
}
