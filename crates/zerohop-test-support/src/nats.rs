//! A real NATS server for tests: Debian's `nats-server` (installed with apt-get when
//! missing, as the project installs what its tests need), started on a free loopback
//! port and killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/sbin/nats-server";

/// The nats-server binary, installed if missing; `None` where it cannot be (no apt-get,
/// no network).
pub fn binary() -> Option<&'static str> {
    if !Path::new(BINARY).exists() {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "nats-server"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            install();
        }
    }
    Path::new(BINARY).exists().then_some(BINARY)
}

/// A running server; killed when dropped.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// A server on a free loopback port, with `args` besides the address (`--pedantic`
    /// is the client's to ask, in its `CONNECT`; `--user`, say).
    pub fn start(args: &[&str]) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port, args.iter().map(|a| (*a).to_owned()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> NatsServer {
        let binary = binary().expect("nats-server is missing and apt-get could not install it");
        let mut command = Command::new(binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the hook calls only prctl, which is
        // async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                // The server dies with the thread that started it (Linux counts a thread as
                // the parent here), so with the test that did, or with the process.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port, args }
    }

    /// One server for every test of a test binary that asks, started the first time.
    pub fn shared() -> &'static NatsServer {
        static SERVER: std::sync::OnceLock<NatsServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| {
            // Started by a thread that lives as long as the process: the server is killed
            // when the thread that started it ends (see `start_on`), not a test's.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                tx.send(NatsServer::start(&[])).unwrap();
                loop {
                    std::thread::park();
                }
            });
            rx.recv().unwrap()
        })
    }

    /// `nats://127.0.0.1:<port>/<subject>`.
    pub fn url(&self, subject: &str) -> String {
        format!("nats://127.0.0.1:{}/{subject}", self.port)
    }

    /// Kills the server and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let args = std::mem::take(&mut self.args);
        *self = Self::start_on(self.port, args);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
