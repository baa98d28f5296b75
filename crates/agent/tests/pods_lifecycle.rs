//! The pod runtime end to end: real sandboxes, the real CNI plugin, real
//! processes, an in-process apiserver; one lab node per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pods_common;

use std::time::Duration;

use pods_common::*;
use serde_json::json;

#[test]
fn two_containers_share_localhost_log_and_are_deleted_cleanly() {
    run("share", |mut lab| async move {
        lab.start_agent();
        let podnet = lab.podnet.display().to_string();
        let client_script = format!(
            "while true; do {podnet} probe send --tcp 127.0.0.1:8080 --data \"hi from $MY_NAME\"; echo; sleep 0.3; done"
        );
        let pod = lab
            .create_pod(json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "terminationGracePeriodSeconds": 3,
                    "containers": [
                        {
                            "name": "server",
                            "image": "podnet/probe",
                            "command": [podnet, "probe", "serve", "--tcp", "0.0.0.0:8080"],
                            "ports": [{"name": "tcp", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": "tcp"}, "periodSeconds": 1},
                        },
                        {
                            "name": "client",
                            "image": "busybox",
                            "command": ["sh", "-c", client_script],
                            "env": [
                                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                        },
                    ],
                },
            }))
            .await;
        let uid = uid(&pod);
        let pod = lab.wait_pod("web", 60, running_and_ready).await;
        let st = status(&pod);
        let ip = st["podIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.244.7."), "{ip}");
        assert_eq!(st["podIPs"][0]["ip"], ip.as_str());
        assert_eq!(st["hostIP"], NODE_IP);
        assert!(st["startTime"].is_string());
        for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(&pod, kind).as_deref(), Some("True"), "{kind}");
        }
        let server = container(&pod, "server");
        assert_eq!(server["ready"], true);
        assert_eq!(server["started"], true);
        assert_eq!(server["restartCount"], 0);
        assert_eq!(server["image"], "podnet/probe");
        assert!(server["state"]["running"]["startedAt"].is_string());
        assert!(
            server["containerID"]
                .as_str()
                .unwrap()
                .starts_with("podnet://")
        );

        // The client container reaches the server container over localhost.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = lab.log(&pod, "client", 0);
            if log.contains("got: hi from web") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "client log: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A pod whose state does not change is not written to again.
        let rv = lab
            .pods()
            .get("web")
            .await
            .unwrap()
            .metadata
            .resource_version;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = lab.pods().get("web").await.unwrap();
        assert_eq!(again.metadata.resource_version, rv, "{:#?}", again.status);
        // The pod has the address CNI gave it, and its hostname.
        let out = lab.exec(&uid, &["hostname"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
        let target = format!("{ip}:8080");
        let out = lab.exec(
            &uid,
            &[
                &lab.podnet.display().to_string(),
                "probe",
                "send",
                "--tcp",
                &target,
                "--data",
                "x",
            ],
        );
        assert!(out.status.success(), "{out:?}");

        let record = lab.record(&uid).expect("record");
        assert_eq!(record.pod_ip.as_deref(), Some(ip.as_str()));
        let pids: Vec<i32> = record.containers.iter().filter_map(|c| c.pid).collect();
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|p| alive(*p)));
        assert!(alive(record.sandbox_pid));
        assert_eq!(lab.allocated_ips(), vec![ip.clone()]);
        assert_eq!(lab.bridge_ports().len(), 1);
        assert_eq!(lab.sandboxes(), vec![record.sandbox_name.clone()]);

        // Deletion: the API marks it, the runtime stops it and removes it.
        lab.delete_pod("web", None).await;
        lab.wait_gone("web", 30).await;
        for pid in pids.iter().chain([&record.sandbox_pid]) {
            assert!(!alive(*pid), "pid {pid} survived the pod");
        }
        assert!(lab.allocated_ips().is_empty(), "{:?}", lab.allocated_ips());
        assert!(lab.bridge_ports().is_empty(), "{:?}", lab.bridge_ports());
        assert!(lab.sandboxes().is_empty());
        assert!(lab.record(&uid).is_none());
        assert!(!lab.log_path(&pod, "client", 0).exists());
        lab.stop_agent().await;
    });
}

#[test]
fn crashing_container_is_restarted_with_back_off() {
    run("crash", |mut lab| async move {
        lab.start_agent();
        lab.create_pod(json!({
            "metadata": {"name": "crash", "namespace": "default"},
            "spec": {"containers": [{
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo attempt; exit 1"],
            }]},
        }))
        .await;
        let mut saw_backoff = false;
        let pod = lab
            .wait_pod("crash", 60, |p| {
                let c = container(p, "c");
                if c["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
                    saw_backoff = true;
                }
                let restarts = c["restartCount"].as_u64().unwrap_or(0);
                let waiting = c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
                if waiting && restarts >= 3 {
                    Ok(())
                } else {
                    Err(format!(
                        "restartCount {restarts}, back-off seen: {saw_backoff}"
                    ))
                }
            })
            .await;
        assert!(saw_backoff);
        // Restarting: Running, but not Ready while it waits.
        assert_eq!(phase(&pod), "Running");
        assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
        let c = container(&pod, "c");
        assert!(
            c["state"]["waiting"]["message"]
                .as_str()
                .unwrap()
                .starts_with("back-off "),
            "{c}"
        );
        let last = &c["lastState"]["terminated"];
        assert_eq!(last["exitCode"], 1, "{c}");
        assert_eq!(last["reason"], "Error");
        assert!(last["finishedAt"].is_string());
        // One log file per attempt.
        for attempt in 0..3 {
            assert_eq!(
                lab.log(&pod, "c", attempt),
                "attempt\n",
                "attempt {attempt}"
            );
        }
        // The back-off doubles: 0.3 s, 0.6 s, 1.2 s… so three restarts take
        // at least 0.3 + 0.6 + 1.2 s.
        let first: chrono::DateTime<chrono::Utc> =
            status(&pod)["startTime"].as_str().unwrap().parse().unwrap();
        let now = chrono::Utc::now();
        assert!(now - first >= chrono::Duration::seconds(1), "{first} {now}");
        lab.delete_pod("crash", Some(1)).await;
        lab.wait_gone("crash", 30).await;
        lab.stop_agent().await;
    });
}

#[test]
fn readiness_follows_the_probe_and_liveness_failure_restarts() {
    run("probes", |mut lab| async move {
        lab.start_agent();
        let flag = lab.dir.path().join("ready-flag");
        let podnet = lab.podnet.display().to_string();
        lab.create_pod(json!({
            "metadata": {"name": "probed", "namespace": "default"},
            "spec": {"containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": [podnet, "probe", "serve", "--tcp", "0.0.0.0:8080"],
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", flag.display().to_string()]},
                        "periodSeconds": 1, "failureThreshold": 1,
                    },
                },
                {
                    "name": "closed",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                    "readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1},
                },
            ]},
        }))
        .await;
        let pod = lab
            .wait_pod("probed", 60, |p| {
                (phase(p) == "Running" && container(p, "app")["state"]["running"].is_object())
                    .then_some(())
                    .ok_or_else(|| "not running".into())
            })
            .await;
        assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
        assert_eq!(container(&pod, "app")["ready"], false);
        std::fs::write(&flag, "").unwrap();
        let pod = lab
            .wait_pod("probed", 20, |p| {
                (container(p, "app")["ready"] == true)
                    .then_some(())
                    .ok_or_else(|| "app not ready".into())
            })
            .await;
        // The other container's port is closed: the pod stays NotReady.
        assert_eq!(container(&pod, "closed")["ready"], false);
        assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
        assert_eq!(condition(&pod, "ContainersReady").as_deref(), Some("False"));
        std::fs::remove_file(&flag).unwrap();
        lab.wait_pod("probed", 20, |p| {
            (container(p, "app")["ready"] == false)
                .then_some(())
                .ok_or_else(|| "app still ready".into())
        })
        .await;
        lab.delete_pod("probed", Some(1)).await;
        lab.wait_gone("probed", 30).await;

        // A startup probe holds readiness back until it passes.
        let started_flag = lab.dir.path().join("started-flag");
        lab.create_pod(json!({
            "metadata": {"name": "slow", "namespace": "default"},
            "spec": {"containers": [{
                "name": "app",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "startupProbe": {
                    "exec": {"command": ["test", "-f", started_flag.display().to_string()]},
                    "periodSeconds": 1, "failureThreshold": 100,
                },
            }]},
        }))
        .await;
        let pod = lab
            .wait_pod("slow", 60, |p| {
                (container(p, "app")["state"]["running"].is_object())
                    .then_some(())
                    .ok_or_else(|| "not running".into())
            })
            .await;
        assert_eq!(container(&pod, "app")["started"], false);
        assert_eq!(container(&pod, "app")["ready"], false);
        std::fs::write(&started_flag, "").unwrap();
        lab.wait_pod("slow", 20, |p| {
            let c = container(p, "app");
            (c["started"] == true && c["ready"] == true)
                .then_some(())
                .ok_or_else(|| format!("{c}"))
        })
        .await;
        lab.delete_pod("slow", Some(1)).await;
        lab.wait_gone("slow", 30).await;

        // A failing liveness probe restarts the container.
        lab.create_pod(json!({
            "metadata": {"name": "dying", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "app",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2},
            }]},
        }))
        .await;
        let pod = lab
            .wait_pod("dying", 60, |p| {
                let c = container(p, "app");
                (c["restartCount"].as_u64().unwrap_or(0) >= 1
                    && c["lastState"]["terminated"].is_object())
                .then_some(())
                .ok_or_else(|| format!("{c}"))
            })
            .await;
        // sleep dies of the SIGTERM it was sent.
        assert_eq!(
            container(&pod, "app")["lastState"]["terminated"]["exitCode"],
            143
        );
        lab.delete_pod("dying", Some(1)).await;
        lab.wait_gone("dying", 30).await;
        lab.stop_agent().await;
    });
}

#[test]
fn http_probe_against_a_real_server() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(python) = python else {
        eprintln!("skipped: no python3 for an HTTP server");
        return;
    };
    run("http", |mut lab| async move {
        lab.start_agent();
        let www = lab.dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("healthz"), "ok").unwrap();
        let server = |name: &str, path: &str| {
            json!({
                "name": name,
                "image": "python",
                "command": [python, "-m", "http.server", "--bind", "0.0.0.0", if name == "good" { "8000" } else { "8001" }],
                "workingDir": www.display().to_string(),
                "readinessProbe": {
                    "httpGet": {"path": path, "port": if name == "good" { 8000 } else { 8001 }},
                    "periodSeconds": 1,
                },
            })
        };
        lab.create_pod(json!({
            "metadata": {"name": "http", "namespace": "default"},
            "spec": {"containers": [server("good", "/healthz"), server("bad", "/missing")]},
        }))
        .await;
        let pod = lab
            .wait_pod("http", 60, |p| {
                (container(p, "good")["ready"] == true)
                    .then_some(())
                    .ok_or_else(|| "good not ready".into())
            })
            .await;
        // 404 is a failure.
        assert_eq!(container(&pod, "bad")["ready"], false);
        assert!(container(&pod, "bad")["state"]["running"].is_object());
        lab.delete_pod("http", Some(1)).await;
        lab.wait_gone("http", 30).await;
        lab.stop_agent().await;
    });
}

#[test]
fn bad_commands_and_finished_pods() {
    run("finish", |mut lab| async move {
        lab.start_agent();
        lab.create_pod(json!({
            "metadata": {"name": "nocmd", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .await;
        lab.create_pod(json!({
            "metadata": {"name": "missing", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["no-such-program-podnet"]}]},
        }))
        .await;
        lab.create_pod(json!({
            "metadata": {"name": "missing-never", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["/no/such/program"]}]},
        }))
        .await;
        let done = lab
            .create_pod(json!({
                "metadata": {"name": "done", "namespace": "default"},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo prepared"]}],
                    "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo done; exit 0"]}],
                },
            }))
            .await;
        let onfailure_ok = lab
            .create_pod(json!({
                "metadata": {"name": "onfailure-ok", "namespace": "default"},
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox",
                    "command": ["sh", "-c", "exit 0"]}]},
            }))
            .await;

        let pod = lab
            .wait_pod("nocmd", 60, |p| {
                let w = &container(p, "c")["state"]["waiting"];
                (w["reason"] == "CreateContainerError")
                    .then_some(())
                    .ok_or_else(|| format!("{w}"))
            })
            .await;
        assert_eq!(
            container(&pod, "c")["state"]["waiting"]["message"],
            "container c has no command: lab containers run host binaries, set command"
        );
        assert_eq!(phase(&pod), "Pending");

        let pod = lab
            .wait_pod("missing", 60, |p| {
                let w = &container(p, "c")["state"]["waiting"];
                (w["reason"] == "RunContainerError")
                    .then_some(())
                    .ok_or_else(|| format!("{w}"))
            })
            .await;
        let msg = container(&pod, "c")["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("no-such-program-podnet") && msg.contains("not found"),
            "{msg}"
        );

        let pod = lab
            .wait_pod("missing-never", 60, |p| {
                (phase(p) == "Failed").then_some(()).ok_or_else(|| phase(p))
            })
            .await;
        let t = &container(&pod, "c")["state"]["terminated"];
        assert_eq!(t["reason"], "StartError", "{t}");
        assert_eq!(t["exitCode"], 128);

        let pod = lab
            .wait_pod("done", 60, |p| {
                (phase(p) == "Succeeded")
                    .then_some(())
                    .ok_or_else(|| phase(p))
            })
            .await;
        let init = &status(&pod)["initContainerStatuses"][0];
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
        assert_eq!(container(&pod, "c")["state"]["terminated"]["exitCode"], 0);
        assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
        assert_eq!(lab.log(&done, "prepare", 0), "prepared\n");
        assert_eq!(lab.log(&done, "c", 0), "done\n");
        lab.wait_pod("onfailure-ok", 60, |p| {
            (phase(p) == "Succeeded")
                .then_some(())
                .ok_or_else(|| phase(p))
        })
        .await;

        // Finished pods give back their address and sandbox; the objects
        // stay. Two pods still hold addresses (nocmd and missing).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while lab.allocated_ips().len() != 2 || lab.sandboxes().len() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?} {:?}",
                lab.allocated_ips(),
                lab.sandboxes()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(lab.record(&uid(&done)).is_none());
        assert!(lab.record(&uid(&onfailure_ok)).is_none());
        assert!(lab.pods().get_opt("done").await.unwrap().is_some());
        // A finished pod's logs stay readable.
        assert_eq!(lab.log(&done, "c", 0), "done\n");

        for name in ["nocmd", "missing", "missing-never", "done", "onfailure-ok"] {
            lab.delete_pod(name, Some(1)).await;
        }
        for name in ["nocmd", "missing", "missing-never", "done", "onfailure-ok"] {
            lab.wait_gone(name, 30).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lab.allocated_ips().is_empty() || !lab.sandboxes().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                lab.sandboxes()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lab.stop_agent().await;
    });
}
