//! `qemu-nbd` serving an image on 127.0.0.1 for the NBD tests: started on a free port,
//! waited for until it accepts connections, killed and reaped on drop.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long `qemu-nbd` gets to listen: it takes milliseconds; the rest is a loaded machine.
const START: Duration = Duration::from_secs(20);

pub(crate) struct QemuNbd {
    child: Child,
    port: u16,
}

impl QemuNbd {
    /// Serves the raw `image` as export `export`, persistent (it outlives each client), with
    /// `extra` arguments (TLS objects and the like) before the image.
    pub(crate) fn serve(image: &Path, export: &str, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "--persistent", "-x", export, "-b", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(extra)
            .arg(image)
            .spawn()
            .expect("qemu-nbd (Debian qemu-utils)");
        let mut server = Self { child, port };
        let deadline = Instant::now() + START;
        // Each probe is a client that leaves before the handshake: qemu-nbd logs it once.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("qemu-nbd exited before it listened: {status}");
            }
            assert!(Instant::now() < deadline, "qemu-nbd not listening on {port} after {START:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
