//! The userspace proxy's choice of backend: round-robin over the ready endpoints, with
//! `sessionAffinity: ClientIP` (a client keeps its endpoint until it has been idle for the
//! affinity timeout), as kube-proxy's userspace `LoadBalancerRR` did.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Round-robin with optional client-IP affinity, for one service port.
#[derive(Debug, Default)]
pub struct Balancer {
    endpoints: Vec<SocketAddrV4>,
    next: usize,
    affinity: Option<Duration>,
    sticky: HashMap<IpAddr, Sticky>,
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    endpoint: SocketAddrV4,
    last_used: Instant,
}

impl Balancer {
    pub fn new(endpoints: Vec<SocketAddrV4>, affinity: Option<Duration>) -> Balancer {
        let mut balancer = Balancer::default();
        balancer.update(endpoints, affinity);
        balancer
    }

    /// Replaces the endpoint set. Affinities to endpoints that are gone are forgotten; the
    /// round-robin position is kept when the set did not change (so a resync does not
    /// restart the rotation).
    pub fn update(&mut self, mut endpoints: Vec<SocketAddrV4>, affinity: Option<Duration>) {
        endpoints.sort();
        endpoints.dedup();
        if endpoints != self.endpoints {
            self.next = 0;
            self.sticky.retain(|_, s| endpoints.contains(&s.endpoint));
            self.endpoints = endpoints;
        }
        if affinity.is_none() {
            self.sticky.clear();
        }
        self.affinity = affinity;
    }

    pub fn endpoints(&self) -> &[SocketAddrV4] {
        &self.endpoints
    }

    /// The endpoint for a new connection (or UDP session) from `client`, skipping those in
    /// `exclude` (endpoints that already failed for this connection); `None` when none is
    /// left.
    pub fn pick(
        &mut self,
        client: IpAddr,
        exclude: &[SocketAddrV4],
        now: Instant,
    ) -> Option<SocketAddrV4> {
        if let Some(timeout) = self.affinity {
            self.sticky
                .retain(|_, s| now.saturating_duration_since(s.last_used) < timeout);
            if let Some(sticky) = self.sticky.get_mut(&client)
                && !exclude.contains(&sticky.endpoint)
            {
                sticky.last_used = now;
                return Some(sticky.endpoint);
            }
        }
        let chosen = self.next_round_robin(exclude)?;
        if self.affinity.is_some() {
            self.sticky.insert(
                client,
                Sticky {
                    endpoint: chosen,
                    last_used: now,
                },
            );
        }
        Some(chosen)
    }

    fn next_round_robin(&mut self, exclude: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        let n = self.endpoints.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            let candidate = self.endpoints[i];
            if !exclude.contains(&candidate) {
                self.next = (i + 1) % n;
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new([10, 244, 1, last].into(), 8080)
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 244, 2, last])
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let mut b = Balancer::new(vec![ep(3), ep(1), ep(2)], None);
        let now = Instant::now();
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(client(9), &[], now).unwrap())
            .collect();
        assert_eq!(picks, vec![ep(1), ep(2), ep(3), ep(1), ep(2), ep(3)]);
    }

    #[test]
    fn failed_endpoints_are_skipped_and_none_when_all_failed() {
        let mut b = Balancer::new(vec![ep(1), ep(2)], None);
        let now = Instant::now();
        assert_eq!(b.pick(client(9), &[ep(1)], now), Some(ep(2)));
        assert_eq!(b.pick(client(9), &[ep(1), ep(2)], now), None);
        assert_eq!(Balancer::new(vec![], None).pick(client(9), &[], now), None);
    }

    #[test]
    fn client_ip_affinity_sticks_until_idle_timeout() {
        let mut b = Balancer::new(vec![ep(1), ep(2), ep(3)], Some(Duration::from_secs(10)));
        let t0 = Instant::now();
        let first = b.pick(client(1), &[], t0).unwrap();
        for i in 1..5 {
            assert_eq!(
                b.pick(client(1), &[], t0 + Duration::from_secs(i)),
                Some(first)
            );
        }
        // Another client gets the next endpoint in the rotation.
        assert_ne!(b.pick(client(2), &[], t0), Some(first));
        // Idle longer than the timeout: the affinity is gone, the rotation goes on.
        let later = t0 + Duration::from_secs(30);
        assert_ne!(b.pick(client(1), &[], later), Some(first));
    }

    #[test]
    fn affinity_to_a_failed_or_removed_endpoint_moves() {
        let mut b = Balancer::new(vec![ep(1), ep(2)], Some(Duration::from_secs(10)));
        let now = Instant::now();
        let first = b.pick(client(1), &[], now).unwrap();
        let moved = b.pick(client(1), &[first], now).unwrap();
        assert_ne!(moved, first);
        assert_eq!(b.pick(client(1), &[], now), Some(moved));
        b.update(vec![first], Some(Duration::from_secs(10)));
        assert_eq!(b.pick(client(1), &[], now), Some(first));
    }

    #[test]
    fn an_unchanged_update_keeps_the_rotation() {
        let mut b = Balancer::new(vec![ep(1), ep(2), ep(3)], None);
        let now = Instant::now();
        assert_eq!(b.pick(client(1), &[], now), Some(ep(1)));
        b.update(vec![ep(3), ep(2), ep(1)], None);
        assert_eq!(b.pick(client(1), &[], now), Some(ep(2)));
    }
}
