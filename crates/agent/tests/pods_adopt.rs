//! An agent that crashes and comes back adopts its pods: same processes,
//! same addresses, no second sandbox; what changed while it was away (a
//! container that ended, a pod deleted, a sandbox nobody recorded) is dealt
//! with when it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pods_common;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pods_common::*;
use serde_json::json;

fn server_pod(lab: &Lab, name: &str) -> serde_json::Value {
    let podnet = lab.podnet.display().to_string();
    json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "server",
                    "image": "podnet/probe",
                    "command": [podnet, "probe", "serve", "--tcp", "0.0.0.0:8080"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                },
                {
                    "name": "sleeper",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                },
            ],
        },
    })
}

#[test]
fn restarted_agent_adopts_running_pods() {
    run("adopt", |mut lab| async move {
        lab.start_agent();
        let pod = lab.create_pod(server_pod(&lab, "kept")).await;
        let uid = uid(&pod);
        let pod = lab.wait_pod("kept", 60, running_and_ready).await;
        let ip = status(&pod)["podIP"].as_str().unwrap().to_string();
        let before = lab.record(&uid).expect("record");
        let server_pid = before
            .containers
            .iter()
            .find(|c| c.name == "server")
            .unwrap()
            .pid
            .unwrap();
        let sleeper_pid = before
            .containers
            .iter()
            .find(|c| c.name == "sleeper")
            .unwrap()
            .pid
            .unwrap();
        let program = children(server_pid);
        assert_eq!(program.len(), 1, "the supervisor runs one program");

        // The agent dies; its pods do not.
        lab.crash_agent().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(alive(before.sandbox_pid) && alive(server_pid) && alive(program[0]));
        // While it is away, the sleeper's program is stopped.
        let sleeper_program = children(sleeper_pid);
        assert_eq!(sleeper_program.len(), 1);
        kill(Pid::from_raw(sleeper_program[0]), Signal::SIGTERM).unwrap();

        lab.start_agent();
        let pod = lab
            .wait_pod("kept", 30, |p| {
                let c = container(p, "sleeper");
                (c["restartCount"] == 1 && c["state"]["running"].is_object())
                    .then_some(())
                    .ok_or_else(|| format!("{c}"))
            })
            .await;
        // It learnt how the sleeper ended, though it was not its parent.
        let last = &container(&pod, "sleeper")["lastState"]["terminated"];
        assert_eq!(last["exitCode"], 143, "{last}");
        // The server was left alone: same processes, same address, one sandbox.
        running_and_ready(&pod).unwrap();
        assert_eq!(status(&pod)["podIP"], ip.as_str());
        let server = container(&pod, "server");
        assert_eq!(server["restartCount"], 0);
        assert_eq!(server["containerID"], format!("podnet://{server_pid}"));
        let after = lab.record(&uid).expect("record");
        assert_eq!(after.sandbox_pid, before.sandbox_pid);
        assert_eq!(after.pod_ip, before.pod_ip);
        assert_eq!(
            after
                .containers
                .iter()
                .find(|c| c.name == "server")
                .unwrap()
                .pid,
            Some(server_pid)
        );
        assert_eq!(children(server_pid), program);
        assert_eq!(lab.sandboxes(), vec![before.sandbox_name.clone()]);
        assert_eq!(lab.allocated_ips(), vec![ip.clone()]);
        assert_eq!(lab.bridge_ports().len(), 1);

        // A graceful stop and start adopt just as well; the adopted server
        // is stopped properly on deletion.
        lab.stop_agent().await;
        lab.start_agent();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pod = lab.wait_pod("kept", 10, running_and_ready).await;
        assert_eq!(
            container(&pod, "server")["containerID"],
            format!("podnet://{server_pid}")
        );
        lab.delete_pod("kept", None).await;
        lab.wait_gone("kept", 30).await;
        assert!(!alive(server_pid) && !alive(program[0]) && !alive(before.sandbox_pid));
        assert!(lab.allocated_ips().is_empty());
        assert!(lab.sandboxes().is_empty());
        lab.stop_agent().await;
    });
}

#[test]
fn pods_deleted_while_the_agent_is_away_are_stopped_and_orphans_collected() {
    run("away", |mut lab| async move {
        lab.start_agent();
        let pod = lab.create_pod(server_pod(&lab, "gone")).await;
        let uid = uid(&pod);
        lab.wait_pod("gone", 60, running_and_ready).await;
        let record = lab.record(&uid).expect("record");
        lab.crash_agent().await;

        // Forced deletion while the agent is away: the object goes at once.
        lab.delete_pod("gone", Some(0)).await;
        lab.wait_gone("gone", 10).await;
        // A sandbox nobody recorded (an agent killed right after starting
        // it), holding an address nobody recorded either.
        let orphan_name = format!("{}-pod-orphan00", lab.node);
        let orphan = podnet_agent::runtime::Sandbox::start(&lab.podnet, &orphan_name, "orphan")
            .expect("start an orphan sandbox");
        let orphan_pid = orphan.pid();
        drop(orphan);
        let net = podnet_agent::runtime::cni::CniNetwork {
            list: podnet_api::cni::NetConfList::parse(
                &std::fs::read(lab.config.cni_conf_dir.join("10-podnet.conflist")).unwrap(),
            )
            .unwrap(),
            bin_dirs: vec![lab.config.cni_bin_dir.clone()],
            host_ns: None,
        };
        let netns = podnet_kernel::NetNs::path_of(&orphan_name);
        net.add(&podnet_agent::runtime::cni::AttachmentRef {
            container_id: "orphan-attachment",
            netns: &netns,
            ifname: "eth0",
        })
        .expect("CNI ADD for the orphan");
        assert_eq!(lab.allocated_ips().len(), 2);

        lab.start_agent();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !lab.sandboxes().is_empty() || !lab.allocated_ips().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "left: {:?} {:?}",
                lab.sandboxes(),
                lab.allocated_ips()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in &record.containers {
            assert!(!alive(c.pid.unwrap()), "container {} survived", c.name);
        }
        assert!(!alive(record.sandbox_pid));
        assert!(!alive(orphan_pid));
        assert!(lab.record(&uid).is_none());
        assert!(lab.bridge_ports().is_empty(), "{:?}", lab.bridge_ports());
        lab.stop_agent().await;
    });
}
