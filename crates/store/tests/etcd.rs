//! Tests specific to the etcd backend: key prefixes, user/password, TLS.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::etcd_server::EtcdServer;
use podnet_store::{EtcdOptions, EtcdStore, EtcdTls, Store, StoreError};

fn opts(url: String, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: vec![url],
        prefix: prefix.into(),
        ..EtcdOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_stores() {
    let server = EtcdServer::start().await;
    let a = EtcdStore::connect(opts(server.client_url(), "/one"))
        .await
        .unwrap();
    let b = EtcdStore::connect(opts(server.client_url(), "/two"))
        .await
        .unwrap();
    a.create("/k", b"a".to_vec(), None).await.unwrap();
    b.create("/k", b"b".to_vec(), None).await.unwrap();
    assert_eq!(a.get("/k").await.unwrap().unwrap().value, b"a");
    let listed = b.list("", None).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].key, "/k");
    assert_eq!(listed.items[0].value, b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server = EtcdServer::start().await;
    let mut admin = etcd_client::Client::connect([server.client_url()], None)
        .await
        .unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let store = EtcdStore::connect(EtcdOptions {
        user: Some(("root".into(), "rootpw".into())),
        ..opts(server.client_url(), "/auth")
    })
    .await
    .unwrap();
    store.create("/k", b"v".to_vec(), None).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().unwrap().value, b"v");

    // Without credentials etcd refuses, and the error says what was attempted on which key.
    let anon = EtcdStore::connect(opts(server.client_url(), "/auth"))
        .await
        .unwrap();
    let err = anon.create("/k2", b"v".to_vec(), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("/k2"), "{err}");
    // Wrong password: connecting (which authenticates) fails.
    assert!(
        EtcdStore::connect(EtcdOptions {
            user: Some(("root".into(), "wrong".into())),
            ..opts(server.client_url(), "/auth")
        })
        .await
        .is_err()
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl (Debian package `openssl`) to make test certificates: {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and one certificate for 127.0.0.1 usable as server and client certificate.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=podnet-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    let tls = EtcdTls {
        ca_pem: Some(read("ca.crt")),
        client_cert_pem: Some(read("node.crt")),
        client_key_pem: Some(read("node.key")),
        domain: None,
    };
    let p = |f: &str| certs.path().join(f).display().to_string();
    let client_tls = || {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
            .identity(etcd_client::Identity::from_pem(
                read("node.crt"),
                read("node.key"),
            ))
    };
    let server = EtcdServer::start_with(
        "https",
        vec![
            format!("--cert-file={}", p("node.crt")),
            format!("--key-file={}", p("node.key")),
            format!("--trusted-ca-file={}", p("ca.crt")),
            "--client-cert-auth".into(),
        ],
        move || etcd_client::ConnectOptions::new().with_tls(client_tls()),
    )
    .await;
    let store = EtcdStore::connect(EtcdOptions {
        tls: Some(tls.clone()),
        ..opts(server.client_url(), "/tls")
    })
    .await
    .unwrap();
    let kv = store.create("/k", b"v".to_vec(), None).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().unwrap(), kv);

    // Half a client identity is refused before connecting.
    let half = EtcdStore::connect(EtcdOptions {
        tls: Some(EtcdTls {
            client_key_pem: None,
            ..tls
        }),
        ..opts(server.client_url(), "/tls")
    })
    .await;
    assert!(matches!(half, Err(StoreError::InvalidArgument { .. })));
}

/// A list larger than one gRPC message (4 MiB) is read in chunks, all at one revision:
/// writes made while it pages do not show up in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_larger_than_a_grpc_message_are_read_at_one_revision() {
    use futures::StreamExt;
    let server = EtcdServer::start().await;
    let store = std::sync::Arc::new(
        EtcdStore::connect(opts(server.client_url(), "/big"))
            .await
            .unwrap(),
    );
    let value = vec![b'x'; 2048];
    futures::stream::iter(0..2500)
        .map(|i| {
            let (store, value) = (store.clone(), value.clone());
            async move {
                store
                    .create(&format!("/items/{i:05}"), value, None)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let before = store.current_revision().await.unwrap();
    store
        .create("/items/zzzzz", b"later".to_vec(), None)
        .await
        .unwrap();
    let listed = store.list("/items/", Some(before)).await.unwrap();
    assert_eq!(listed.items.len(), 2500);
    assert_eq!(listed.revision, before);
    assert_eq!(listed.items[0].key, "/items/00000");
    assert_eq!(listed.items[2499].key, "/items/02499");
    assert_eq!(store.list("/items/", None).await.unwrap().items.len(), 2501);
}
