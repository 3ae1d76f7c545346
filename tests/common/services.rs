//! Real services the remote-source tests talk to on loopback: an S3 server
//! (moto's server mode), from `SEAMWATCH_TEST_S3` (`.ci/run` starts one) or
//! started here when `moto_server` is on the PATH.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An S3 endpoint; the server is stopped on drop if this started it.
pub struct S3Server {
    pub endpoint: String,
    child: Option<Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The S3 server to test against, or `None` (with a note on stderr) when
/// there is none and `SEAMWATCH_REQUIRE_S3` is not set.
pub fn s3_server() -> Option<S3Server> {
    if let Ok(endpoint) = std::env::var("SEAMWATCH_TEST_S3") {
        return Some(S3Server {
            endpoint,
            child: None,
        });
    }
    let port = super::free_port();
    match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let server = S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                child: Some(child),
            };
            super::wait_for(Duration::from_secs(30), "moto_server to listen", || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            Some(server)
        }
        Err(e) => {
            assert!(
                std::env::var_os("SEAMWATCH_REQUIRE_S3").is_none(),
                "SEAMWATCH_REQUIRE_S3 is set but there is no S3 server: SEAMWATCH_TEST_S3 unset and moto_server: {e}"
            );
            eprintln!(
                "NOTE: no S3 server (set SEAMWATCH_TEST_S3 or install moto[server]); the S3 replay test did not run (.ci/run runs it)"
            );
            None
        }
    }
}
