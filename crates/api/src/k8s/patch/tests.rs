use serde_json::{Value, json};

use super::*;

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "resourceVersion": "7",
            "labels": {"app": "web", "old": "yes"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "finalizers": ["example.com/a"]
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.25",
                    "ports": [
                        {"containerPort": 80, "name": "http", "protocol": "TCP"},
                        {"containerPort": 443, "name": "https", "protocol": "TCP"}
                    ],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                },
                {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "inf"]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.1.0.5",
            "podIPs": [{"ip": "10.1.0.5"}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]
        }
    })
}

fn smp(kind: &str, original: &Value, patch: Value) -> Value {
    apply_patch(kind, PatchType::Strategic, original, &patch).unwrap()
}

fn smp_err(kind: &str, original: &Value, patch: Value) -> PatchError {
    apply_patch(kind, PatchType::Strategic, original, &patch).unwrap_err()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

// ---- content types ----

#[test]
fn content_types() {
    use PatchType::*;
    assert_eq!(
        PatchType::from_content_type("application/json-patch+json"),
        Some(Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json"),
        Some(Merge)
    );
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json"),
        Some(Strategic)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
        Some(Merge)
    );
    assert_eq!(
        PatchType::from_content_type(" Application/Strategic-Merge-Patch+JSON ;charset=UTF-8"),
        Some(Strategic)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        None
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(PatchType::from_content_type(""), None);
    for t in [Json, Merge, Strategic] {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
}

// ---- strategic merge patch: what kubectl apply sends ----

#[test]
fn apply_changes_a_container_image() {
    let original = pod();
    let patch = json!({
        "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}"
        }},
        "spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.27", "name": "web"}]
        }
    });
    let out = smp("Pod", &original, patch);
    let containers = &out["spec"]["containers"];
    assert_eq!(names(containers), ["web", "sidecar"]);
    assert_eq!(containers[0]["image"], "nginx:1.27");
    // The rest of the container is kept.
    assert_eq!(
        containers[0]["ports"],
        original["spec"]["containers"][0]["ports"]
    );
    assert_eq!(
        containers[0]["env"],
        original["spec"]["containers"][0]["env"]
    );
    assert_eq!(containers[1], original["spec"]["containers"][1]);
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"new\":true}"
    );
    // Nothing else moved.
    assert_eq!(out["status"], original["status"]);
    assert_eq!(out["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(out["spec"]["volumes"], original["spec"]["volumes"]);
    // The original is untouched.
    assert_eq!(original, pod());
}

#[test]
fn apply_adds_a_container() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "logger"}],
        "containers": [{"image": "busybox", "name": "logger", "command": ["tail", "-f"]}]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["web", "sidecar", "logger"]
    );
    assert_eq!(
        out["spec"]["containers"][2],
        json!({"image": "busybox", "name": "logger", "command": ["tail", "-f"]})
    );

    // Inserted between the two, as the manifest orders it.
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "logger"}, {"name": "sidecar"}],
        "containers": [{"image": "busybox", "name": "logger"}]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["web", "logger", "sidecar"]
    );
}

#[test]
fn apply_removes_a_port_with_delete_directive_and_element_order() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{
            "$setElementOrder/ports": [{"containerPort": 80}],
            "name": "web",
            "ports": [{"$patch": "delete", "containerPort": 443}]
        }]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
    );
    assert_eq!(names(&out["spec"]["containers"]), ["web", "sidecar"]);
    // No directive survives into the object.
    assert!(!out.to_string().contains('$'), "{out}");
}

#[test]
fn apply_removes_a_container_and_changes_env() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [
            {
                "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}],
                "name": "web"
            },
            {"$patch": "delete", "name": "sidecar"}
        ]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(names(&out["spec"]["containers"]), ["web"]);
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn element_order_alone_reorders() {
    let patch =
        json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(names(&out["spec"]["containers"]), ["sidecar", "web"]);
}

#[test]
fn element_order_must_match_the_patch_list() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"name": "sidecar", "image": "x"}, {"name": "web", "image": "y"}]
    }});
    let err = smp_err("Pod", &pod(), patch);
    assert!(matches!(err, PatchError::InvalidDirective { .. }), "{err}");
    assert_eq!(err.http_code(), 400);

    let patch = json!({"spec": {"$setElementOrder/containers": {"name": "web"}}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
    let patch = json!({"spec": {"$setElementOrder/containers": [{"image": "web"}]}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
    let patch = json!({"spec": {"$setElementOrder": [{"name": "web"}]}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
}

#[test]
fn new_merge_list_items_without_order_come_first() {
    // As in Go's mergeSortedSlice: with no $setElementOrder, patch items the object did not
    // have are placed before the object's own.
    let patch = json!({"spec": {"containers": [{"name": "logger", "image": "busybox"}]}});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["logger", "web", "sidecar"]
    );
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let patch = json!({"spec": {
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}])
    );

    // The patch may not set a key the list leaves out.
    let patch = json!({"spec": {"volumes": [
        {"$retainKeys": ["name"], "hostPath": {"path": "/srv"}, "name": "data"}
    ]}});
    let err = smp_err("Pod", &pod(), patch);
    assert_eq!(err.http_code(), 400, "{err}");
    let patch = json!({"spec": {"volumes": [{"$retainKeys": "name", "name": "data"}]}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
}

#[test]
fn replace_and_delete_directives() {
    // A list replaced as a whole.
    let patch = json!({"spec": {"containers": [
        {"$patch": "replace"},
        {"name": "only", "image": "nginx"}
    ]}});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "nginx"}])
    );

    // A map replaced as a whole.
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "fresh": "1", "gone": null}}});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(out["metadata"]["labels"], json!({"fresh": "1"}));

    // A map emptied.
    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(out["metadata"]["labels"], json!({}));

    for bad in [json!("remove"), json!(true), json!(null)] {
        let patch = json!({"metadata": {"labels": {"$patch": bad}}});
        let err = smp_err("Pod", &pod(), patch);
        assert!(matches!(err, PatchError::InvalidDirective { .. }), "{err}");
        assert_eq!(err.http_code(), 400);
    }
    for bad in ["merge", "bogus"] {
        let patch = json!({"spec": {"containers": [{"$patch": bad, "name": "web"}]}});
        assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
    }
    // A delete needs the merge key.
    let patch = json!({"spec": {"containers": [{"$patch": "delete", "image": "nginx"}]}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
    // Unknown directives are refused rather than stored.
    let patch = json!({"spec": {"$unknown": 1}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);
}

#[test]
fn nulls_delete_and_lists_without_key_are_replaced() {
    let patch = json!({
        "metadata": {"labels": {"old": null, "tier": "frontend"}, "annotations": null},
        "spec": {"tolerations": [{"key": "b", "operator": "Exists", "effect": "NoSchedule"}], "nodeSelector": {"disk": "ssd"}}
    });
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "frontend"})
    );
    assert!(out["metadata"].get("annotations").is_none());
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(out["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    // A null for a key the object lacks is no change.
    let patch = json!({"spec": {"hostname": null}});
    assert_eq!(smp("Pod", &pod(), patch), pod());
}

#[test]
fn new_values_come_without_nulls_or_directives() {
    let patch = json!({"spec": {
        "containers": [{
            "name": "logger",
            "image": "busybox",
            "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}],
            "resources": {"limits": {"cpu": "1", "memory": null}}
        }],
        "securityContext": {"runAsUser": 1000, "runAsGroup": null}
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["spec"]["containers"][0],
        json!({"name": "logger", "image": "busybox", "env": [{"name": "X", "value": "1"}], "resources": {"limits": {"cpu": "1"}}})
    );
    assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1000}));
}

#[test]
fn merge_keys_compare_numbers_by_value() {
    let patch = json!({"spec": {"containers": [
        {"name": "web", "ports": [{"containerPort": 80.0, "name": "web"}]}
    ]}});
    let out = smp("Pod", &pod(), patch);
    let ports = out["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(ports[0]["name"], "web");
}

#[test]
fn finalizers_are_unioned_and_deleted_from() {
    // kube-rs style: add one finalizer.
    let patch = json!({"metadata": {"finalizers": ["example.com/b", "example.com/a"]}});
    let out = smp("Pod", &pod(), patch);
    let mut finalizers: Vec<&str> = out["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    finalizers.sort_unstable();
    assert_eq!(finalizers, ["example.com/a", "example.com/b"]);

    // kubectl apply: keeps the listed order.
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["example.com/a", "example.com/c"],
        "finalizers": ["example.com/c"]
    }});
    let out = smp("Pod", &pod(), patch);
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/c"])
    );

    // kubectl apply removing one.
    let mut original = pod();
    original["metadata"]["finalizers"] = json!(["example.com/a", "example.com/b"]);
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["example.com/b"],
        "$deleteFromPrimitiveList/finalizers": ["example.com/a"]
    }});
    let out = smp("Pod", &original, patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["example.com/b"]));

    // Deleting from a list the object does not have is no change.
    let mut original = pod();
    original["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
    assert_eq!(smp("Pod", &original, patch), original);

    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}});
    assert_eq!(smp_err("Pod", &pod(), patch).http_code(), 400);

    // With a JSON merge patch the list is replaced.
    let patch = json!({"metadata": {"finalizers": ["example.com/b"]}});
    let out = apply_patch("Pod", PatchType::Merge, &pod(), &patch).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["example.com/b"]));
}

#[test]
fn owner_references_merge_by_uid() {
    let mut original = pod();
    original["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}]);
    let patch = json!({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u2"},
        {"uid": "u1", "controller": true}
    ]}});
    let out = smp("Pod", &original, patch);
    let refs = out["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 2);
    let rs = refs.iter().find(|r| r["uid"] == "u1").unwrap();
    assert_eq!(rs["controller"], true);
    assert_eq!(rs["name"], "rs");
}

#[test]
fn pod_status_merges_conditions_and_ips() {
    // What a kubelet's status patch looks like.
    let patch = json!({"status": {
        "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}, {"type": "Initialized"}],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            {"type": "Initialized", "status": "True"}
        ],
        "podIPs": [{"ip": "fd00::5"}],
        "containerStatuses": [{"name": "web", "ready": true}]
    }});
    let out = smp("Pod", &pod(), patch);
    let types: Vec<&str> = out["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["PodScheduled", "Ready", "Initialized"]);
    assert_eq!(out["status"]["conditions"][1]["status"], "True");
    let ips: Vec<&str> = out["status"]["podIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2);
    assert!(ips.contains(&"10.1.0.5") && ips.contains(&"fd00::5"));
    assert_eq!(
        out["status"]["containerStatuses"],
        json!([{"name": "web", "ready": true}])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": "10.254.0.10",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
            ]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    });
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 80}, {"port": 8080}],
        "ports": [
            {"port": 80, "targetPort": 9090},
            {"name": "alt", "port": 8080, "protocol": "TCP"},
            {"$patch": "delete", "port": 443}
        ]
    }});
    let out = smp("Service", &svc, patch);
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": 9090, "protocol": "TCP"},
            {"name": "alt", "port": 8080, "protocol": "TCP"}
        ])
    );
    assert_eq!(out["spec"]["clusterIP"], "10.254.0.10");

    // Ingress has no merge key: replaced.
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}});
    let out = smp("Service", &svc, patch);
    assert_eq!(
        out["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "192.0.2.2"}])
    );
}

#[test]
fn node_fields() {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.0.1"}, {"type": "Hostname", "address": "node-1"}],
            "conditions": [{"type": "Ready", "status": "False"}]
        }
    });
    let patch = json!({
        "spec": {"podCIDRs": ["fd00:1::/64"], "taints": []},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.0.2"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]
        }
    });
    let out = smp("Node", &node, patch);
    let cidrs = out["spec"]["podCIDRs"].as_array().unwrap();
    assert_eq!(cidrs.len(), 2);
    assert!(cidrs.contains(&json!("10.1.0.0/24")) && cidrs.contains(&json!("fd00:1::/64")));
    assert_eq!(out["spec"]["taints"], json!([]));
    let addresses = out["status"]["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 2);
    assert!(addresses.contains(&json!({"type": "InternalIP", "address": "192.168.0.2"})));
    assert!(addresses.contains(&json!({"type": "Hostname", "address": "node-1"})));
    let conditions = out["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2);
    assert!(conditions.contains(&json!({"type": "Ready", "status": "True"})));
}

#[test]
fn namespace_endpoints_slices_leases_events() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    let out = smp("Namespace", &ns, json!({"spec": {"finalizers": []}}));
    assert_eq!(out["spec"]["finalizers"], json!([]));

    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]});
    let patch = json!({"subsets": [{"addresses": [{"ip": "10.1.0.6"}], "ports": [{"port": 80}]}]});
    let out = smp("Endpoints", &ep, patch.clone());
    assert_eq!(out["subsets"], patch["subsets"]);

    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"port": 80}]});
    let patch = json!({"endpoints": [{"addresses": ["10.1.0.6"], "conditions": {"ready": true}}]});
    let out = smp("EndpointSlice", &slice, patch.clone());
    assert_eq!(out["endpoints"], patch["endpoints"]);
    assert_eq!(out["apiVersion"], "discovery.k8s.io/v1");

    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
    let out = smp(
        "Lease",
        &lease,
        json!({"spec": {"renewTime": "2024-01-01T00:00:00.000000Z"}}),
    );
    assert_eq!(out["spec"]["holderIdentity"], "node-1");
    assert_eq!(out["spec"]["renewTime"], "2024-01-01T00:00:00.000000Z");

    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "count": 1,
        "involvedObject": {"kind": "Pod", "name": "web"}});
    let out = smp(
        "Event",
        &event,
        json!({"count": 2, "lastTimestamp": "2024-01-01T00:00:00Z"}),
    );
    assert_eq!(out["count"], 2);
    assert_eq!(out["involvedObject"]["name"], "web");
}

#[test]
fn strategic_errors_are_errors_not_panics() {
    for patch in [json!([]), json!("x"), json!(1), json!(null)] {
        let err = smp_err("Pod", &pod(), patch);
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
        assert_eq!(err.http_code(), 400);
    }
    // A list element without the merge key.
    let patch = json!({"spec": {"containers": [{"image": "nginx"}]}});
    let err = smp_err("Pod", &pod(), patch);
    assert_eq!(err.http_code(), 400, "{err}");
    assert!(err.to_string().contains("name"), "{err}");
    // Lists of lists.
    let mut original = pod();
    original["metadata"]["finalizers"] = json!([["a"]]);
    let err = smp_err(
        "Pod",
        &original,
        json!({"metadata": {"finalizers": [["b"]]}}),
    );
    assert!(matches!(err, PatchError::Unmergeable { .. }), "{err}");
    assert_eq!(err.http_code(), 422);
    // Elements of different types.
    let err = smp_err("Pod", &pod(), json!({"spec": {"containers": ["web"]}}));
    assert_eq!(err.http_code(), 422, "{err}");
    // The original is not an object.
    let err = apply_patch("Pod", PatchType::Strategic, &json!([1]), &json!({})).unwrap_err();
    assert_eq!(err.http_code(), 500);
    // A type change is a replacement, not an error.
    let out = smp(
        "Pod",
        &pod(),
        json!({"spec": {"containers": {"name": "web"}}}),
    );
    assert_eq!(out["spec"]["containers"], json!({"name": "web"}));
}

// ---- JSON merge patch: kubectl label / annotate ----

#[test]
fn kubectl_label_and_annotate() {
    let patch = json!({"metadata": {"labels": {"old": null, "tier": "frontend"}}});
    let out = apply_patch("Pod", PatchType::Merge, &pod(), &patch).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "frontend"})
    );
    assert_eq!(out["spec"], pod()["spec"]);

    // Labels on an object that has none.
    let mut original = pod();
    original["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let patch = json!({"metadata": {"labels": {"a": "1", "b": null}}});
    let out = apply_patch("Pod", PatchType::Merge, &original, &patch).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));

    // kubectl annotate --overwrite, and removing one (`kubectl annotate pod web note-`).
    let patch = json!({"metadata": {"annotations": {"note": "hi", "kubectl.kubernetes.io/last-applied-configuration": null}}});
    let out = apply_patch("Pod", PatchType::Merge, &pod(), &patch).unwrap();
    assert_eq!(out["metadata"]["annotations"], json!({"note": "hi"}));
}

#[test]
fn merge_patch_replaces_lists_and_rejects_non_objects() {
    let patch = json!({"spec": {"containers": [{"name": "only", "image": "x"}]}});
    let out = apply_patch("Pod", PatchType::Merge, &pod(), &patch).unwrap();
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );

    // kube-rs Patch::Merge with a whole object.
    let mut whole = pod();
    whole["spec"]["nodeName"] = json!("node-2");
    let out = apply_patch("Pod", PatchType::Merge, &pod(), &whole).unwrap();
    assert_eq!(out, whole);

    for patch in [json!([]), json!("x"), json!(null), json!(3)] {
        let err = apply_patch("Pod", PatchType::Merge, &pod(), &patch).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
        assert_eq!(err.http_code(), 400);
    }
}

// ---- JSON patch: kubectl patch --type=json ----

#[test]
fn json_patch_operations() {
    let patch = json!([
        {"op": "test", "path": "/spec/containers/0/image", "value": "nginx:1.25"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.27"},
        {"op": "add", "path": "/metadata/labels/tier", "value": "frontend"},
        {"op": "remove", "path": "/metadata/labels/old"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "logger", "image": "busybox"}},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/annotations/app"},
        {"op": "move", "from": "/spec/nodeName", "path": "/metadata/annotations/node"},
        {"op": "add", "path": "/metadata/annotations/a~1b", "value": "escaped"}
    ]);
    let out = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap();
    assert_eq!(out["spec"]["containers"][0]["image"], "nginx:1.27");
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "frontend"})
    );
    assert_eq!(
        names(&out["spec"]["containers"]),
        ["web", "sidecar", "logger"]
    );
    assert_eq!(out["metadata"]["annotations"]["app"], "web");
    assert_eq!(out["metadata"]["annotations"]["node"], "node-1");
    assert_eq!(out["metadata"]["annotations"]["a/b"], "escaped");
    assert!(out["spec"].get("nodeName").is_none());
    assert_eq!(
        apply_patch("Pod", PatchType::Json, &pod(), &json!([])).unwrap(),
        pod()
    );
}

#[test]
fn json_patch_failing_test_and_missing_path() {
    let patch = json!([
        {"op": "replace", "path": "/spec/nodeName", "value": "node-9"},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "6"}
    ]);
    let err = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap_err();
    match &err {
        PatchError::TestFailed { index, path } => {
            assert_eq!(*index, 1);
            assert_eq!(path, "/metadata/resourceVersion");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.http_code(), 422);
    assert!(err.to_string().contains("/metadata/resourceVersion"));

    // A test of a path that does not exist fails too.
    let patch = json!([{"op": "test", "path": "/spec/hostname", "value": "x"}]);
    let err = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap_err();
    assert_eq!(err.http_code(), 422, "{err}");

    for (op, name) in [
        (
            json!({"op": "remove", "path": "/metadata/labels/missing"}),
            "remove",
        ),
        (
            json!({"op": "replace", "path": "/spec/hostname", "value": "x"}),
            "replace",
        ),
        (
            json!({"op": "add", "path": "/metadata/nothere/x", "value": "x"}),
            "add",
        ),
        (
            json!({"op": "add", "path": "/spec/containers/7", "value": {}}),
            "add",
        ),
        (
            json!({"op": "move", "from": "/spec/nope", "path": "/spec/x"}),
            "move",
        ),
    ] {
        let err = apply_patch("Pod", PatchType::Json, &pod(), &json!([op])).unwrap_err();
        match &err {
            PatchError::OperationFailed { index, op, .. } => {
                assert_eq!(*index, 0);
                assert_eq!(*op, name);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.http_code(), 422);
    }
}

#[test]
fn json_patch_malformed() {
    for patch in [
        json!({"op": "add", "path": "/a", "value": 1}),
        json!("[]"),
        json!(null),
        json!([{"op": "frobnicate", "path": "/a"}]),
        json!([{"op": "add", "value": 1}]),
        json!([{"op": "add", "path": "/a"}]),
        json!([{"path": "/a", "value": 1}]),
        json!([{"op": "add", "path": "no-slash", "value": 1}]),
        json!([{"op": "move", "path": "/a"}]),
        json!([1]),
    ] {
        let err = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{patch}: {err:?}");
        assert_eq!(err.http_code(), 400);
    }
    let many: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "Pod"}))
        .collect();
    let err = apply_patch("Pod", PatchType::Json, &pod(), &Value::Array(many)).unwrap_err();
    assert_eq!(err.http_code(), 413);
    // Replacing the root with a non-object.
    let patch = json!([{"op": "replace", "path": "", "value": "x"}]);
    let err = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap_err();
    assert!(matches!(err, PatchError::NotAnObject("string")), "{err:?}");
    assert_eq!(err.http_code(), 422);
}

// ---- apiVersion and kind ----

#[test]
fn type_meta_may_not_change() {
    let cases = [
        (PatchType::Merge, json!({"kind": "Service"})),
        (PatchType::Strategic, json!({"kind": "Service"})),
        (PatchType::Strategic, json!({"apiVersion": "v2"})),
        (
            PatchType::Json,
            json!([{"op": "replace", "path": "/kind", "value": "Node"}]),
        ),
        (
            PatchType::Json,
            json!([{"op": "replace", "path": "/apiVersion", "value": "apps/v1"}]),
        ),
    ];
    for (patch_type, patch) in cases {
        let err = apply_patch("Pod", patch_type, &pod(), &patch).unwrap_err();
        assert!(matches!(err, PatchError::TypeChanged { .. }), "{err:?}");
        assert_eq!(err.http_code(), 422);
    }
    // The same values are fine; removing them gets them back.
    let out = smp("Pod", &pod(), json!({"apiVersion": "v1", "kind": "Pod"}));
    assert_eq!(out, pod());
    let out = apply_patch(
        "Pod",
        PatchType::Merge,
        &pod(),
        &json!({"kind": null, "apiVersion": null}),
    )
    .unwrap();
    assert_eq!(out, pod());
    let patch = json!([{"op": "remove", "path": "/kind"}]);
    let out = apply_patch("Pod", PatchType::Json, &pod(), &patch).unwrap();
    assert_eq!(out, pod());
    // An original without a kind takes the kind argument as the expected one.
    let bare = json!({"metadata": {"name": "x"}});
    let err = apply_patch("Pod", PatchType::Merge, &bare, &json!({"kind": "Service"})).unwrap_err();
    assert_eq!(err.http_code(), 422);
    let out = apply_patch("Pod", PatchType::Merge, &bare, &json!({"kind": "Pod"})).unwrap();
    assert_eq!(out["kind"], "Pod");
}

// ---- robustness ----

#[test]
fn odd_inputs_never_panic() {
    let values = [
        json!(null),
        json!(1),
        json!(-1.5),
        json!("s"),
        json!(true),
        json!([]),
        json!([null]),
        json!([1, "a"]),
        json!([[1]]),
        json!({}),
        json!({"$patch": "replace"}),
        json!({"$patch": "delete", "name": "web"}),
        json!({"$retainKeys": []}),
        json!({"$retainKeys": [1]}),
        json!({"$setElementOrder/containers": [1, 2]}),
        json!({"$deleteFromPrimitiveList/containers": [{"name": "web"}]}),
        json!({"name": "web"}),
        json!([{"name": "web"}, {"$patch": "replace"}]),
        json!([{"$patch": "delete"}]),
        json!([{"name": null}]),
    ];
    let fields = [
        "containers",
        "volumes",
        "tolerations",
        "finalizers",
        "labels",
        "ports",
    ];
    let originals = [
        pod(),
        json!({}),
        json!({"spec": {"containers": [1, {"x": 1}], "ports": "x"}}),
    ];
    for original in &originals {
        for field in fields {
            for value in &values {
                for wrap in ["spec", "metadata"] {
                    let patch = json!({wrap: {field: value}});
                    for t in [PatchType::Strategic, PatchType::Merge] {
                        if let Err(e) = apply_patch("Pod", t, original, &patch) {
                            let _ = (e.to_string(), e.http_code());
                        }
                    }
                    let order =
                        json!({wrap: {format!("$setElementOrder/{field}"): value, field: value}});
                    let _ = apply_patch("Pod", PatchType::Strategic, original, &order);
                    let delete =
                        json!({wrap: {format!("$deleteFromPrimitiveList/{field}"): value}});
                    let _ = apply_patch("Pod", PatchType::Strategic, original, &delete);
                    let ops =
                        json!([{"op": "add", "path": format!("/{wrap}/{field}"), "value": value}]);
                    let _ = apply_patch("Pod", PatchType::Json, original, &ops);
                }
            }
        }
    }
}
