//! Real Kubernetes API servers for tests: etcd + kube-apiserver on loopback, started by
//! `scripts/kube/start-apiserver.sh` (the binary is `KUBE_APISERVER`, else the one
//! `scripts/kube/apiserver.sh` installs in ~/.cache/meridian-kube). With
//! `MERIDIAN_TEST_KUBECONFIG` set, the hub is that cluster instead (any real cluster where the
//! test may create namespaces and apply Meridian's CRDs).
//!
//! On the hub every test works in a namespace of its own (`test_namespace`, named after the
//! test and the process, so files and runs never meet) and deletes it with everything in it at
//! the end (`delete_namespace`); Meridian's CRDs stay installed, as on any hub.

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::{Client, Config, ResourceExt};
use meridian_k8s::status::FIELD_MANAGER;

/// One API server with its etcd; both are killed on drop.
pub struct ApiServer {
    pub kubeconfig: PathBuf,
    dir: Option<PathBuf>,
}

impl ApiServer {
    /// The hub: the cluster `MERIDIAN_TEST_KUBECONFIG` names, else a fresh local API server.
    pub fn start(name: &str) -> ApiServer {
        if let Some(path) = std::env::var_os("MERIDIAN_TEST_KUBECONFIG") {
            return ApiServer {
                kubeconfig: PathBuf::from(path),
                dir: None,
            };
        }
        Self::start_local(name)
    }

    /// A fresh local API server in a temporary directory, always: member clusters, whose
    /// tests create stand-in Nodes and kill the API server, are never a real cluster.
    pub fn start_local(name: &str) -> ApiServer {
        let script = repo_path("scripts/kube/start-apiserver.sh");
        let dir = std::env::temp_dir().join(format!("meridian-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The script picks the API server's port (retrying if it is taken); etcd uses Unix
        // sockets in `dir`. It inherits KUBE_APISERVER, which chooses the binary.
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("running start-apiserver.sh");
        assert!(
            out.status.success(),
            "could not start a kube-apiserver for {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ApiServer {
            kubeconfig: dir.join("kubeconfig"),
            dir: Some(dir),
        }
    }

    /// A client as the admin (or the given kubeconfig's user).
    pub async fn client(&self) -> Client {
        self.client_as(None).await
    }

    /// A client that impersonates `user` (for checking RBAC rules as the controller).
    pub async fn client_as(&self, user: Option<&str>) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        config.auth_info.impersonate = user.map(str::to_string);
        Client::try_from(config).unwrap()
    }

    /// A guard that deletes `namespaces` (see `delete_namespace`) if the test panics before
    /// its own cleanup, so a failed test leaves nothing on a shared hub either. A local API
    /// server is thrown away whole, so then it does nothing.
    pub fn cleanup_on_panic(&self, namespaces: &[&str]) -> CleanupOnPanic {
        CleanupOnPanic {
            kubeconfig: self.dir.is_none().then(|| self.kubeconfig.clone()),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Kills the API server (and its etcd) now, as a lost member cluster.
    pub fn kill(&mut self) {
        if let Some(dir) = &self.dir {
            for pid in ["apiserver.pid", "etcd.pid"] {
                if let Ok(pid) = std::fs::read_to_string(dir.join(pid)) {
                    let _ = Command::new("kill")
                        .arg("-9")
                        .arg(pid.trim())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// See `ApiServer::cleanup_on_panic`.
pub struct CleanupOnPanic {
    kubeconfig: Option<PathBuf>,
    namespaces: Vec<String>,
}

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        let Some(kubeconfig) = self.kubeconfig.take() else {
            return;
        };
        if !std::thread::panicking() {
            return;
        }
        let namespaces = std::mem::take(&mut self.namespaces);
        // The test's runtime is unwinding (and its client's tasks with it): a runtime and a
        // client of its own, on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let hub = ApiServer {
                    kubeconfig,
                    dir: None,
                };
                let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                delete_namespaces(&hub.client().await, &names).await;
                eprintln!("cleaned up after the failure: deleted the namespaces {names:?}");
            });
        });
        let _ = cleanup.join();
    }
}

/// Applies every document of a multi-document YAML text (server-side apply).
pub async fn apply_yaml(client: &Client, yaml: &str) {
    for doc in yaml.split("\n---").filter(|d| d.contains("kind:")) {
        let object: DynamicObject = serde_norway::from_str(doc).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), &ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {}: {e}", types.kind, object.name_any()));
    }
}

/// Applies the CustomResourceDefinitions in `yaml` and waits until each is Established.
pub async fn apply_crds(client: &Client, yaml: &str) {
    apply_yaml(client, yaml).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names = yaml
        .split("\n---")
        .filter(|d| d.contains("kind: CustomResourceDefinition"))
        .map(|doc| {
            serde_norway::from_str::<DynamicObject>(doc)
                .unwrap()
                .name_any()
        });
    for name in names {
        let mut established = false;
        for _ in 0..100 {
            let crd = crds.get(&name).await.unwrap();
            established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "{name} never became Established");
    }
}

/// Creates a namespace (it may exist already).
pub async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the namespace {name}: {e}"),
    }
}

/// Installs (or updates) the generated CRDs.
pub async fn install_crds(client: &Client) {
    apply_crds(client, &meridian_k8s::crds_yaml().unwrap()).await;
}

/// A namespace of the test's own, `<prefix>-<process id>`: files sharing a hub never meet,
/// and a run never meets what an interrupted earlier run left.
pub async fn test_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", std::process::id());
    create_namespace(client, &name).await;
    name
}

/// `yaml` with every `namespace: meridian` (objects and RBAC subjects) moved to `namespace`.
pub fn in_namespace(yaml: &str, namespace: &str) -> String {
    yaml.replace(
        "namespace: meridian\n",
        &format!("namespace: {namespace}\n"),
    )
}

/// Deletes `namespace` with everything in it and waits until it is gone. An API server alone
/// (no controller-manager, as `start-apiserver.sh` runs it) never empties a deleted namespace,
/// so this first does what the namespace controller would: delete every namespaced kind's
/// objects there. If no namespace controller has touched the namespace 3 s after its deletion
/// (it sets status conditions), it is finalized here; a real cluster's controller finishes it.
pub async fn delete_namespace(client: &Client, namespace: &str) {
    delete_namespaces(client, &[namespace]).await;
}

/// `delete_namespace` for several at once (their waits overlap).
pub async fn delete_namespaces(client: &Client, names: &[&str]) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::DELETE_COLLECTION)
            {
                continue;
            }
            for namespace in names {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &resource);
                if let Err(e) = api
                    .delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await
                {
                    panic!("deleting the {} in {namespace}: {e}", resource.plural);
                }
            }
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in names {
        match namespaces.delete(namespace, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("deleting the namespace {namespace}: {e}"),
        }
    }
    let started = Instant::now();
    for namespace in names {
        wait_until_gone(&namespaces, namespace, started).await;
    }
}

/// Waits until the deleted `namespace` is gone, finalizing it where no namespace controller
/// handles it (see `delete_namespace`).
async fn wait_until_gone(namespaces: &Api<Namespace>, namespace: &str, deleted: Instant) {
    let mut finalized = false;
    loop {
        let Some(ns) = namespaces.get_opt(namespace).await.unwrap() else {
            return;
        };
        let handled = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| !c.is_empty());
        if !finalized && !handled && deleted.elapsed() > Duration::from_secs(3) {
            let mut ns = ns;
            ns.spec.get_or_insert_default().finalizers = Some(vec![]);
            namespaces
                .replace_subresource("finalize", namespace, &PostParams::default(), &ns)
                .await
                .unwrap_or_else(|e| panic!("finalizing the namespace {namespace}: {e}"));
            finalized = true;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "the namespace {namespace} is still there 60 s after its deletion: {:?}",
            ns_status(namespaces, namespace).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ns_status(namespaces: &Api<Namespace>, name: &str) -> Option<serde_json::Value> {
    let ns = namespaces.get_opt(name).await.ok()??;
    serde_json::to_value(ns.status).ok()
}

/// A path in the repository (found above the crate, so the root's tests can share this).
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("scripts/kube").is_dir())
        .expect("the repository root above the crate")
        .join(path)
}

/// `scripts/helm/build.sh`: builds the `helm template` stand-in once (cached by its
/// source's hash) and gives its path.
pub fn helm_renderer() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_path("scripts/helm/build.sh"))
        .output()
        .expect("running scripts/helm/build.sh");
    assert!(
        out.status.success(),
        "scripts/helm/build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
}

/// What an API server answered: the status, every `Warning:` header and the body.
pub struct Answer {
    pub status: http::StatusCode,
    pub warnings: Vec<String>,
    pub body: serde_json::Value,
}

/// Sends `request` and keeps the `Warning:` headers, which the typed API drops.
pub async fn send_keeping_warnings(client: &Client, request: http::Request<Vec<u8>>) -> Answer {
    let what = format!("{} {}", request.method(), request.uri());
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = response.into_body().collect_bytes().await.unwrap();
    Answer {
        status,
        warnings,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    }
}

/// The API server's minor version, such as 36 (digits only: `"36+"` is 36).
pub async fn minor_version(client: &Client) -> u32 {
    let info = client.apiserver_version().await.unwrap();
    info.minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("API server minor version {:?}", info.minor))
}
