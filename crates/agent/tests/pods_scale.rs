//! Many pods at once on one node: all reach Running and Ready with distinct
//! addresses, and all are gone again after deletion (bounded: 30 pods).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pods_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pods_common::*;
use serde_json::json;

const PODS: usize = 30;

#[test]
fn thirty_pods_start_and_stop_together() {
    run("scale", |mut lab| async move {
        lab.start_agent();
        let podnet = lab.podnet.display().to_string();
        let started = Instant::now();
        for i in 0..PODS {
            lab.create_pod(json!({
                "metadata": {"name": format!("p{i}"), "namespace": "default"},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "c",
                        "image": "podnet/probe",
                        "command": [podnet, "probe", "serve", "--tcp", "0.0.0.0:8080"],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            }))
            .await;
        }
        let mut ips = HashSet::new();
        for i in 0..PODS {
            let pod = lab.wait_pod(&format!("p{i}"), 120, running_and_ready).await;
            ips.insert(status(&pod)["podIP"].as_str().unwrap().to_string());
        }
        let elapsed = started.elapsed();
        eprintln!("{PODS} pods Running and Ready in {elapsed:?}");
        assert_eq!(ips.len(), PODS, "distinct addresses");
        assert_eq!(lab.allocated_ips().len(), PODS);
        assert_eq!(lab.sandboxes().len(), PODS);

        let started = Instant::now();
        for i in 0..PODS {
            lab.delete_pod(&format!("p{i}"), None).await;
        }
        for i in 0..PODS {
            lab.wait_gone(&format!("p{i}"), 60).await;
        }
        eprintln!("{PODS} pods stopped and removed in {:?}", started.elapsed());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lab.allocated_ips().is_empty() || !lab.sandboxes().is_empty() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(lab.bridge_ports().is_empty());
        lab.stop_agent().await;
    });
}
