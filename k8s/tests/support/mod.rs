//! Real Kubernetes API servers for tests: etcd + kube-apiserver v1.20 on loopback, started by
//! `scripts/kube/start-apiserver.sh` (the binary comes from `scripts/kube/build-apiserver.sh`,
//! cached in ~/.cache/meridian-kube). With `MERIDIAN_TEST_KUBECONFIG` set, the hub is that
//! cluster instead (any real cluster where the test may create a namespace and CRDs).

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One API server with its etcd; both are killed on drop.
pub struct ApiServer {
    pub kubeconfig: PathBuf,
    dir: Option<PathBuf>,
}

impl ApiServer {
    /// Starts a fresh API server in a temporary directory, or uses `MERIDIAN_TEST_KUBECONFIG`.
    pub fn start(name: &str) -> ApiServer {
        if let Some(path) = std::env::var_os("MERIDIAN_TEST_KUBECONFIG") {
            return ApiServer {
                kubeconfig: PathBuf::from(path),
                dir: None,
            };
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("scripts/kube/start-apiserver.sh");
        let dir = std::env::temp_dir().join(format!("meridian-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (port, etcd_port) = (free_port(), free_port());
        // etcd also takes the next two ports; pick a base with room.
        let etcd_port = if etcd_port > 65000 {
            40000 + (etcd_port % 1000)
        } else {
            etcd_port
        };
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(port.to_string())
            .arg(etcd_port.to_string())
            .output()
            .expect("running start-apiserver.sh");
        assert!(
            out.status.success(),
            "could not start a kube-apiserver (build it with scripts/kube/build-apiserver.sh): {}{}",
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

    /// Kills the API server (and its etcd) now, as a lost member cluster.
    pub fn kill(&mut self) {
        if let Some(dir) = &self.dir {
            for pid in ["apiserver.pid", "etcd.pid"] {
                if let Ok(pid) = std::fs::read_to_string(dir.join(pid)) {
                    let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
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
