//! The address pool: which address a client may have, given the configured range, the static
//! reservations and the live leases. Every change is written through to a [`LeaseStore`].
//!
//! Time is passed in (seconds since the Unix epoch), so tests drive expiry without sleeping.
//! The pool knows nothing of DHCP messages.

use super::leases::{Lease, LeaseState, LeaseStore, LeaseStoreError, Mac};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// How long an OFFER holds an address for the client before it is free again.
pub const OFFER_HOLD_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
    #[error("pool range {start}..={end} is not inside {network}/{prefix}")]
    RangeOutsideSubnet {
        start: Ipv4Addr,
        end: Ipv4Addr,
        network: Ipv4Addr,
        prefix: u8,
    },
    #[error("reservation {ip} for {mac} is not inside {network}/{prefix}")]
    ReservationOutsideSubnet {
        mac: Mac,
        ip: Ipv4Addr,
        network: Ipv4Addr,
        prefix: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The server's own address on the segment; never handed out.
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_secs: u32,
    pub reservations: HashMap<Mac, Ipv4Addr>,
}

impl PoolConfig {
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.server_ip) & u32::from(self.netmask()))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !u32::from(self.netmask()))
    }

    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network())
            && ip != self.network()
            && ip != self.broadcast()
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.range_start..=self.range_end).contains(&ip)
    }
}

/// Addresses and their leases.
pub struct Pool {
    cfg: PoolConfig,
    leases: BTreeMap<Ipv4Addr, Lease>,
    store: Box<dyn LeaseStore>,
}

impl Pool {
    /// Checks `cfg` and loads the stored leases.
    pub fn new(cfg: PoolConfig, mut store: Box<dyn LeaseStore>) -> Result<Self, PoolError> {
        let (network, prefix) = (cfg.network(), cfg.prefix_len);
        if !cfg.in_subnet(cfg.range_start) || !cfg.in_subnet(cfg.range_end) {
            return Err(PoolError::RangeOutsideSubnet {
                start: cfg.range_start,
                end: cfg.range_end,
                network,
                prefix,
            });
        }
        if let Some((&mac, &ip)) = cfg.reservations.iter().find(|(_, ip)| !cfg.in_subnet(**ip)) {
            return Err(PoolError::ReservationOutsideSubnet {
                mac,
                ip,
                network,
                prefix,
            });
        }
        let leases = store.load()?.into_iter().map(|l| (l.ip, l)).collect();
        Ok(Self { cfg, leases, store })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub fn lease(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    /// Whether `mac` may hold `ip` now.
    pub fn available_to(&self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        if ip == self.cfg.server_ip || !self.cfg.in_subnet(ip) {
            return false;
        }
        match self.cfg.reservations.get(&mac) {
            Some(&reserved) => return reserved == ip,
            None if self.cfg.reservations.values().any(|&r| r == ip) => return false,
            None => {}
        }
        if !self.cfg.in_range(ip) {
            return false;
        }
        match self.leases.get(&ip) {
            Some(l) if l.is_live(now) => l.mac == mac && l.state != LeaseState::Declined,
            _ => true,
        }
    }

    /// Picks an address for `mac` and holds it: its reservation, its current lease, the address
    /// it asked for, or the lowest free one. `None` when the pool is exhausted.
    pub fn offer(
        &mut self,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Ipv4Addr>, PoolError> {
        let reserved = self.cfg.reservations.get(&mac).copied();
        let current = self
            .leases
            .values()
            .find(|l| l.mac == mac && l.is_live(now) && l.state != LeaseState::Declined)
            .map(|l| l.ip);
        let free = || {
            (u32::from(self.cfg.range_start)..=u32::from(self.cfg.range_end))
                .map(Ipv4Addr::from)
                .find(|&ip| self.available_to(mac, ip, now))
        };
        let chosen = reserved
            .or(current)
            .or(requested.filter(|&ip| self.available_to(mac, ip, now)))
            .or_else(free);
        let Some(ip) = chosen.filter(|&ip| self.available_to(mac, ip, now)) else {
            return Ok(None);
        };
        if self
            .leases
            .get(&ip)
            .is_some_and(|l| l.state == LeaseState::Bound && l.is_live(now))
        {
            return Ok(Some(ip));
        }
        self.put(Lease {
            ip,
            mac,
            state: LeaseState::Offered,
            expires_at: now + OFFER_HOLD_SECS,
        })?;
        Ok(Some(ip))
    }

    /// Binds `ip` to `mac` for the lease time; `false` (NAK) when `mac` may not have it.
    pub fn bind(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> Result<bool, PoolError> {
        if !self.available_to(mac, ip, now) {
            return Ok(false);
        }
        let stale: Vec<Ipv4Addr> = self
            .leases
            .values()
            .filter(|l| l.mac == mac && l.ip != ip && l.state != LeaseState::Declined)
            .map(|l| l.ip)
            .collect();
        for old in stale {
            self.remove(old)?;
        }
        self.put(Lease {
            ip,
            mac,
            state: LeaseState::Bound,
            expires_at: now + u64::from(self.cfg.lease_secs),
        })?;
        Ok(true)
    }

    /// The client gave `ip` back (RELEASE) or took another server's offer.
    pub fn release(&mut self, mac: Mac, ip: Ipv4Addr) -> Result<(), PoolError> {
        if self
            .leases
            .get(&ip)
            .is_some_and(|l| l.mac == mac && l.state != LeaseState::Declined)
        {
            self.remove(ip)?;
        }
        Ok(())
    }

    /// Drops any offer held for `mac` (it chose another server).
    pub fn forget_offers(&mut self, mac: Mac) -> Result<(), PoolError> {
        let offered: Vec<Ipv4Addr> = self
            .leases
            .values()
            .filter(|l| l.mac == mac && l.state == LeaseState::Offered)
            .map(|l| l.ip)
            .collect();
        for ip in offered {
            self.remove(ip)?;
        }
        Ok(())
    }

    /// `mac` found `ip` in use by someone else (DECLINE): keep it out of the pool for a lease time.
    pub fn decline(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> Result<(), PoolError> {
        if !self.cfg.in_range(ip) {
            return Ok(());
        }
        self.put(Lease {
            ip,
            mac,
            state: LeaseState::Declined,
            expires_at: now + u64::from(self.cfg.lease_secs),
        })
    }

    fn put(&mut self, lease: Lease) -> Result<(), PoolError> {
        self.store.put(&lease)?;
        self.leases.insert(lease.ip, lease);
        Ok(())
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Result<(), PoolError> {
        self.store.remove(ip)?;
        self.leases.remove(&ip);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pxe::leases::SqliteLeaseStore;

    pub(crate) fn config() -> PoolConfig {
        PoolConfig {
            server_ip: Ipv4Addr::new(10, 9, 0, 1),
            prefix_len: 24,
            range_start: Ipv4Addr::new(10, 9, 0, 100),
            range_end: Ipv4Addr::new(10, 9, 0, 102),
            lease_secs: 3600,
            reservations: HashMap::from([(
                Mac([2, 0, 0, 0, 0, 0x99]),
                Ipv4Addr::new(10, 9, 0, 50),
            )]),
        }
    }

    fn pool() -> Pool {
        Pool::new(config(), Box::new(SqliteLeaseStore::in_memory().unwrap())).unwrap()
    }

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    #[test]
    fn subnet_arithmetic() {
        let c = config();
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Addr::new(10, 9, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 9, 0, 255));
        assert!(!c.in_subnet(Ipv4Addr::new(10, 9, 1, 1)));
    }

    #[test]
    fn offers_lowest_free_then_same_address_again() {
        let mut p = pool();
        assert_eq!(
            p.offer(A, None, 0).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 100))
        );
        assert_eq!(
            p.offer(B, None, 0).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 101))
        );
        assert_eq!(
            p.offer(A, None, 1).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 100))
        );
    }

    #[test]
    fn requested_address_honoured_when_free() {
        let mut p = pool();
        let want = Ipv4Addr::new(10, 9, 0, 102);
        assert_eq!(p.offer(A, Some(want), 0).unwrap(), Some(want));
        assert_eq!(
            p.offer(B, Some(want), 0).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 100))
        );
    }

    #[test]
    fn reservation_wins_and_is_never_given_to_others() {
        let mut p = pool();
        let r = Mac([2, 0, 0, 0, 0, 0x99]);
        assert_eq!(
            p.offer(r, None, 0).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 50))
        );
        assert!(!p.bind(A, Ipv4Addr::new(10, 9, 0, 50), 0).unwrap());
        assert!(!p.bind(r, Ipv4Addr::new(10, 9, 0, 100), 0).unwrap());
    }

    #[test]
    fn exhausted_pool_offers_nothing_until_a_lease_expires() {
        let mut p = pool();
        for i in 1..=3 {
            let mac = Mac([2, 0, 0, 0, 1, i]);
            let ip = p.offer(mac, None, 0).unwrap().unwrap();
            assert!(p.bind(mac, ip, 0).unwrap());
        }
        assert_eq!(p.offer(A, None, 10).unwrap(), None);
        assert!(p.offer(A, None, 3601).unwrap().is_some());
    }

    #[test]
    fn declined_address_is_skipped() {
        let mut p = pool();
        p.decline(A, Ipv4Addr::new(10, 9, 0, 100), 0).unwrap();
        assert_eq!(
            p.offer(A, None, 1).unwrap(),
            Some(Ipv4Addr::new(10, 9, 0, 101))
        );
    }

    #[test]
    fn restarted_pool_keeps_bound_leases() {
        let path = std::env::temp_dir().join(format!("mallee-pool-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let open =
            || Pool::new(config(), Box::new(SqliteLeaseStore::open(&path).unwrap())).unwrap();
        let ip = {
            let mut p = open();
            let ip = p.offer(A, None, 0).unwrap().unwrap();
            assert!(p.bind(A, ip, 0).unwrap());
            ip
        };
        let mut p = open();
        assert!(
            !p.bind(B, ip, 10).unwrap(),
            "another client got a bound address"
        );
        assert_eq!(p.offer(A, None, 10).unwrap(), Some(ip));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn release_frees_the_address_for_others() {
        let mut p = pool();
        let ip = p.offer(A, None, 0).unwrap().unwrap();
        assert!(p.bind(A, ip, 0).unwrap());
        assert!(!p.bind(B, ip, 1).unwrap());
        p.release(A, ip).unwrap();
        assert!(p.bind(B, ip, 2).unwrap());
    }

    #[test]
    fn range_outside_subnet_is_rejected() {
        let mut c = config();
        c.range_end = Ipv4Addr::new(10, 9, 1, 5);
        let err = Pool::new(c, Box::new(SqliteLeaseStore::in_memory().unwrap()))
            .err()
            .unwrap();
        assert!(matches!(err, PoolError::RangeOutsideSubnet { .. }), "{err}");
    }
}
