//! The proxy against an apiserver that does not serve `discovery.k8s.io/v1` EndpointSlices
//! (`--runtime-config discovery.k8s.io/v1=false`, as a Kubernetes 1.20 cluster): it says so
//! once, with the release that serves them; retries with a growing back-off, not in a
//! loop; programs the Services anyway (a ClusterIP without endpoints refuses at once); and
//! when the API is served again it takes the slices and the Service reaches its endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::ErrorKind;
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{ApiSettings, Cluster, cluster_ip, connect_in, eventually, tcp_ports};
use podnet_apiserver::versions::ServedVersions;
use podnet_proxy::ProxyMode;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

/// Every event the proxy logs, with when.
static LOG: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());

/// Keeps each event's message and fields as text.
struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        LOG.lock().unwrap().push((Instant::now(), text.0));
    }
}

fn logged(needle: &str) -> Vec<Instant> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|(_, t)| t.contains(needle))
        .map(|(at, _)| *at)
        .collect()
}

const SAID: &str = "does not serve endpointslices.discovery.k8s.io (Kubernetes 1.21 and later do";
const STILL: &str = "watching endpointslices.discovery.k8s.io still fails";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_endpoint_slices_services_are_programmed_and_the_slices_taken_when_served() {
    let filter = tracing_subscriber::EnvFilter::new("podnet_proxy=debug,podnet_watch=debug");
    let subscriber = tracing_subscriber::registry().with(filter).with(Capture);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let off = ApiSettings {
        persistent: true,
        versions: ServedVersions::from_runtime_config("discovery.k8s.io/v1=false").unwrap(),
    };
    let started = Instant::now();
    let mut c = Cluster::start_with(ProxyMode::Nftables, off).await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let target = SocketAddrV4::new(cluster_ip(&svc), 80);
    // Programmed without its endpoints: refused at once, not left to time out.
    let pod = c.ns.pods[1].try_clone().unwrap();
    eventually("web refused at once", Duration::from_secs(10), || {
        let t = Instant::now();
        match connect_in(&pod, target) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                (t.elapsed() < Duration::from_secs(1)).then_some(())
            }
            _ => None,
        }
    })
    .await;

    // Ten seconds without the API: said once; retried with a back-off that grows (0.8,
    // 1.6, 3.2 s and more, each plus up to as much again), not every second.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    assert_eq!(logged(SAID).len(), 1, "{:#?}", LOG.lock().unwrap());
    let attempts: Vec<Instant> = logged(SAID).into_iter().chain(logged(STILL)).collect();
    assert!(
        (2..=5).contains(&attempts.len()),
        "{} attempts in 10 s",
        attempts.len()
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .skip(1)
            .all(|g| *g >= Duration::from_millis(1500)),
        "{gaps:?}"
    );

    // Served again: the slice written now is taken, and web reaches its endpoint.
    c.restart_apiserver(ApiSettings {
        persistent: true,
        versions: ServedVersions::default(),
    })
    .await;
    c.set_endpoints("web", tcp_ports(), &[(0, common::NODE, true, true, false)])
        .await;
    let answer = eventually("web answered", Duration::from_secs(45), || {
        connect_in(&pod, target).ok()
    })
    .await;
    assert!(answer.starts_with(common::PODS[0].0), "{answer}");
    assert_eq!(
        logged("watching endpointslices.discovery.k8s.io works again").len(),
        1
    );
    assert_eq!(logged(SAID).len(), 1);
}
