use std::net::IpAddr;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use crate::model::{Origin, Region, ServiceRegion};

pub(crate) use super::LiteralView as View;

/// A view where region i is up iff `up[i]`, with all endpoints matching.
fn view(up: &[bool], eps_per_region: usize) -> View {
    View {
        regions: up.to_vec(),
        endpoints: up.iter().map(|&u| vec![u; eps_per_region]).collect(),
    }
}

fn region(index: usize, name: &str, addrs: &[&str]) -> Arc<Region> {
    Arc::new(Region {
        name: name.into(),
        index,
        target: RegionTarget::Endpoints(addrs.iter().map(|a| a.parse().unwrap()).collect()),
        check: None,
        min_healthy: 1,
        location: None,
        depends: None,
        origin: Origin::default(),
    })
}

fn regions3() -> Vec<Arc<Region>> {
    vec![
        region(0, "us", &["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
        region(1, "eu", &["198.51.100.1", "198.51.100.2", "2001:db8::2"]),
        region(2, "ap", &["203.0.113.1", "203.0.113.2", "2001:db8::3"]),
    ]
}

fn service(policy: Policy, regions: &[Arc<Region>], weights: &[u32], when: WhenAllDown) -> Service {
    Service {
        key: "svc".into(),
        name: hickory_proto::rr::Name::from_ascii("svc.example.").unwrap(),
        policy,
        regions: regions
            .iter()
            .zip(weights.iter().copied().chain(std::iter::repeat(1)))
            .map(|(r, w)| ServiceRegion {
                region: r.clone(),
                weight: w,
            })
            .collect(),
        ttl: 30,
        degraded_ttl: 10,
        max_records: 8,
        when_all_down: when,
        origin: Origin::default(),
    }
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(42)
}

fn names(svc: &Service, sel: &Selection) -> Vec<String> {
    sel.picks
        .iter()
        .map(|&p| picked_region(svc, p).name.clone())
        .collect()
}

#[test]
fn failover_answers_the_first_up_region_n_deep() {
    let rs = regions3();
    let svc = service(Policy::Failover, &rs, &[], WhenAllDown::FailOpen);
    let cases: [([bool; 3], &str, bool); 7] = [
        ([true, true, true], "us", false),
        ([false, true, true], "eu", true),
        ([false, false, true], "ap", true),
        ([true, false, false], "us", false),
        ([true, false, true], "us", false),
        ([false, true, false], "eu", true),
        ([true, true, false], "us", false),
    ];
    for (up, want, degraded) in cases {
        let sel = select(&svc, &view(&up, 3), &mut rng());
        assert_eq!(sel.outcome, Outcome::Answer);
        assert_eq!(names(&svc, &sel), [want], "{up:?}");
        assert_eq!(sel.degraded, degraded, "{up:?}");
        assert!(!sel.all_down);
    }
}

#[test]
fn all_down_follows_the_configured_rule() {
    let rs = regions3();
    let down = view(&[false, false, false], 3);
    let sel = select(
        &service(Policy::Failover, &rs, &[], WhenAllDown::FailOpen),
        &down,
        &mut rng(),
    );
    assert_eq!(
        (
            sel.outcome.clone(),
            sel.picks.clone(),
            sel.all_down,
            sel.degraded
        ),
        (Outcome::Answer, vec![0], true, true)
    );
    let svc = service(
        Policy::Failover,
        &rs,
        &[],
        WhenAllDown::LastResort(rs[2].clone()),
    );
    let sel = select(&svc, &down, &mut rng());
    assert_eq!(names(&svc, &sel), ["ap"]);
    assert!(sel.all_down);
    let sel = select(
        &service(Policy::Failover, &rs, &[], WhenAllDown::NoData),
        &down,
        &mut rng(),
    );
    assert_eq!(sel.outcome, Outcome::NoData);
    let sel = select(
        &service(Policy::Failover, &rs, &[], WhenAllDown::ServFail),
        &down,
        &mut rng(),
    );
    assert_eq!(sel.outcome, Outcome::ServFail);
    // Fail-open all-healthy answers every region; fail-open weighted draws by weight.
    let svc = service(Policy::AllHealthy, &rs, &[], WhenAllDown::FailOpen);
    assert_eq!(select(&svc, &down, &mut rng()).picks, [0, 1, 2]);
    let svc = service(
        Policy::Weighted { answers: 1 },
        &rs,
        &[0, 5, 0],
        WhenAllDown::FailOpen,
    );
    assert_eq!(names(&svc, &select(&svc, &down, &mut rng())), ["eu"]);
}

#[test]
fn fail_open_answers_every_endpoint_of_a_down_region() {
    let rs = regions3();
    let svc = service(Policy::Failover, &rs, &[], WhenAllDown::FailOpen);
    let down = view(&[false, false, false], 3);
    let sel = select(&svc, &down, &mut rng());
    let mut out = Vec::new();
    addresses(&svc, &sel, &down, false, &mut rng(), &mut out);
    assert_eq!(
        out,
        [
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "192.0.2.2".parse().unwrap()
        ]
    );
    addresses(&svc, &sel, &down, true, &mut rng(), &mut out);
    assert_eq!(out, ["2001:db8::1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn only_healthy_endpoints_of_a_degraded_region_are_answered() {
    let rs = regions3();
    let svc = service(Policy::Failover, &rs, &[], WhenAllDown::FailOpen);
    let v = View {
        regions: vec![true, true, true],
        endpoints: vec![vec![false, true, false], vec![true; 3], vec![true; 3]],
    };
    let sel = select(&svc, &v, &mut rng());
    assert_eq!(names(&svc, &sel), ["us"]);
    assert!(sel.degraded, "an endpoint of the answered region is down");
    let mut out = Vec::new();
    addresses(&svc, &sel, &v, false, &mut rng(), &mut out);
    assert_eq!(out, ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    // Its IPv6 endpoint is down while IPv4 is up: AAAA gets nothing, not the dead host.
    addresses(&svc, &sel, &v, true, &mut rng(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn weighted_draws_by_weight_and_uses_standby_only_when_needed() {
    let rs = regions3();
    let svc = service(
        Policy::Weighted { answers: 1 },
        &rs,
        &[3, 1, 0],
        WhenAllDown::FailOpen,
    );
    let all = view(&[true, true, true], 3);
    let mut r = rng();
    let mut counts = [0usize; 3];
    for _ in 0..40_000 {
        let sel = select(&svc, &all, &mut r);
        assert!(!sel.degraded);
        counts[sel.picks[0]] += 1;
    }
    assert_eq!(
        counts[2], 0,
        "standby gets nothing while a weighted region is up"
    );
    let share = counts[0] as f64 / 40_000.0;
    assert!((share - 0.75).abs() < 0.01, "{counts:?}");
    // us down: all traffic to eu, degraded.
    let sel = select(&svc, &view(&[false, true, true], 3), &mut r);
    assert_eq!(
        (names(&svc, &sel), sel.degraded),
        (vec!["eu".to_string()], true)
    );
    // Both weighted down: the standby.
    let sel = select(&svc, &view(&[false, false, true], 3), &mut r);
    assert_eq!(names(&svc, &sel), ["ap"]);
    assert!(sel.degraded && !sel.all_down);
}

#[test]
fn weighted_with_several_answers_draws_distinct_regions() {
    let rs = regions3();
    let svc = service(
        Policy::Weighted { answers: 2 },
        &rs,
        &[1, 1, 1],
        WhenAllDown::FailOpen,
    );
    let mut r = rng();
    for _ in 0..200 {
        let sel = select(&svc, &view(&[true, true, true], 3), &mut r);
        assert_eq!(sel.picks.len(), 2);
        assert_ne!(sel.picks[0], sel.picks[1]);
    }
    // Only one up: one answer.
    let sel = select(&svc, &view(&[false, true, false], 3), &mut r);
    assert_eq!(names(&svc, &sel), ["eu"]);
}

#[test]
fn all_healthy_answers_every_healthy_endpoint_shuffled_and_capped() {
    let rs = regions3();
    let mut svc = service(Policy::AllHealthy, &rs, &[], WhenAllDown::FailOpen);
    let v = view(&[true, false, true], 3);
    let sel = select(&svc, &v, &mut rng());
    assert_eq!(names(&svc, &sel), ["us", "ap"]);
    assert!(sel.degraded);
    let mut out = Vec::new();
    let mut r = rng();
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..50 {
        addresses(&svc, &sel, &v, false, &mut r, &mut out);
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted.len(), 4);
        orders.insert(out.clone());
    }
    assert!(orders.len() > 1, "shuffled");
    svc.max_records = 3;
    addresses(&svc, &sel, &v, false, &mut r, &mut out);
    assert_eq!(out.len(), 3, "capped at max-records");
    let sel = select(&svc, &view(&[true, true, true], 3), &mut r);
    assert!(!sel.degraded);
}

#[test]
fn every_degraded_combination_of_two_regions() {
    // Exhaustive over region and endpoint states of two regions with two endpoints.
    let rs = vec![
        region(0, "a", &["192.0.2.1", "192.0.2.2"]),
        region(1, "b", &["192.0.2.3", "192.0.2.4"]),
    ];
    for policy in [
        Policy::Failover,
        Policy::Weighted { answers: 1 },
        Policy::AllHealthy,
    ] {
        let svc = service(policy.clone(), &rs, &[1, 1], WhenAllDown::NoData);
        for bits in 0u8..16 {
            let eps = vec![
                vec![bits & 1 != 0, bits & 2 != 0],
                vec![bits & 4 != 0, bits & 8 != 0],
            ];
            let v = View {
                regions: eps.iter().map(|e| e.iter().any(|&u| u)).collect(),
                endpoints: eps.clone(),
            };
            let sel = select(&svc, &v, &mut rng());
            let fully_healthy = bits == 15;
            if !v.regions.iter().any(|&u| u) {
                assert_eq!(sel.outcome, Outcome::NoData, "{policy:?} {bits:04b}");
                continue;
            }
            let mut out = Vec::new();
            addresses(&svc, &sel, &v, false, &mut rng(), &mut out);
            assert!(!out.is_empty(), "{policy:?} {bits:04b}");
            // Never a down endpoint while a healthy one is picked.
            for a in &out {
                let (r, e) = match a.to_string().as_str() {
                    "192.0.2.1" => (0, 0),
                    "192.0.2.2" => (0, 1),
                    "192.0.2.3" => (1, 0),
                    _ => (1, 1),
                };
                assert!(
                    eps[r][e],
                    "{policy:?} {bits:04b}: answered down endpoint {a}"
                );
            }
            if fully_healthy {
                assert!(!sel.degraded, "{policy:?}");
            }
            if matches!(policy, Policy::AllHealthy) {
                assert_eq!(sel.degraded, !fully_healthy, "{policy:?} {bits:04b}");
            }
        }
    }
}
