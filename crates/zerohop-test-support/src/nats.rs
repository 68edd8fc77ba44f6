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
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        // A port free a moment ago may be another test's server's by now (tests run in
        // parallel): then this one cannot listen, and another free port is tried.
        for _ in 0..4 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(server) = Self::try_start_on(port, args.clone()) {
                return server;
            }
        }
        panic!("nats-server did not listen on any of four free ports");
    }

    fn start_on(port: u16, args: Vec<String>) -> NatsServer {
        Self::try_start_on(port, args).unwrap_or_else(|| panic!("nats-server did not listen on {port}"))
    }

    /// The server on `port`, once it answers there itself (its name in the `INFO` it
    /// greets with: a connection that only succeeds may be another server's on the
    /// same port); `None` if it exited first or did not answer within 10 s.
    fn try_start_on(port: u16, args: Vec<String>) -> Option<NatsServer> {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "zerohop-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let binary = binary().expect("nats-server is missing and apt-get could not install it");
        let mut command = Command::new(binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--server_name", &name])
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
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let greeting = format!("\"server_name\":\"{name}\"");
        while !greets_as(port, &greeting) {
            if child.try_wait().ok().flatten().is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(NatsServer { child, port, args })
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

/// Whether the server on `port` greets with an `INFO` line holding `greeting`.
fn greets_as(port: u16, greeting: &str) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ") && line.contains(greeting)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
