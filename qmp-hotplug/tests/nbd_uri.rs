//! `NbdExport::parse_uri` against QEMU 7.2's own NBD URI parser: every URI below is opened
//! with `qemu-img info` against live `qemu-nbd` servers (TCP on `127.0.0.1` and `::1`, and a unix
//! socket), and the parser must accept exactly the URIs QEMU opens, naming the export QEMU
//! reached. With `QMP_REQUIRE_QEMU=1` a missing QEMU fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qemu_launcher::qemu_available_or_skip;
use qmp_hotplug::{NbdExport, NbdServer};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port()
}

/// `qemu-nbd` serving `image` as `export` at `listen` (`-k PATH` or `-b HOST -p PORT`).
fn serve(image: &Path, export: &str, listen: &[&str], ready: impl Fn() -> bool) -> Server {
    let child = Command::new("qemu-nbd")
        .args(["-f", "raw", "--persistent", "--shared=8", "-x", export])
        .args(listen)
        .arg(image)
        .spawn()
        .expect("qemu-nbd (Debian qemu-utils)");
    let server = Server(child);
    for _ in 0..500 {
        if ready() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("qemu-nbd {listen:?} did not come up");
}

fn qemu_opens(uri: &str) -> bool {
    Command::new("qemu-img")
        .args(["info", "--output=json", uri])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("qemu-img (Debian qemu-utils)")
        .success()
}

#[test]
fn the_parser_accepts_what_qemu_opens_and_refuses_what_it_refuses() {
    if !qemu_available_or_skip("NBD URIs against QEMU") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let (v4, v6) = (free_port("127.0.0.1"), free_port("::1"));
    let up = |addr: SocketAddr| move || TcpStream::connect(addr).is_ok();
    let v4_addr = SocketAddr::from(([127, 0, 0, 1], v4));
    let v6_addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6));
    let socket = dir.path().join("nbd sock");
    let _servers = [
        serve(&image, "a b", &["-b", "127.0.0.1", "-p", &v4.to_string()], up(v4_addr)),
        serve(&image, "/slash", &["-b", "::1", "-p", &v6.to_string()], up(v6_addr)),
        serve(&image, "u", &["-k", socket.to_str().unwrap()], || socket.exists()),
    ];
    let s = "%2Fnbd%20sock";
    let dir_path = dir.path().to_str().unwrap();
    let tcp = |host: &str, port, export: &str| {
        NbdExport::new(NbdServer::Tcp { host: host.into(), port }).with_export(export)
    };
    let unix = NbdExport::new(NbdServer::Unix(socket.clone())).with_export("u");
    let opened = [
        (format!("nbd://127.0.0.1:{v4}/a%20b"), tcp("127.0.0.1", v4, "a b")),
        (format!("nbd+tcp://127.0.0.1:{v4}/a%20b"), tcp("127.0.0.1", v4, "a b")),
        (format!("nbd://127%2E0.0.1:{v4}/a%20b"), tcp("127.0.0.1", v4, "a b")),
        (format!("nbd://user@127.0.0.1:{v4}/a%20b#frag"), tcp("127.0.0.1", v4, "a b")),
        (format!("nbd://127.0.0.1:{v4}/a%20b?"), tcp("127.0.0.1", v4, "a b")),
        (format!("nbd://[::1]:{v6}//slash"), tcp("::1", v6, "/slash")),
        (format!("nbd://[::1]:{v6}/%2Fslash"), tcp("::1", v6, "/slash")),
        (format!("nbd+unix:///u?socket={dir_path}{s}"), unix.clone()),
        (format!("nbd+unix:///u?&socket={dir_path}{s}&"), unix.clone()),
    ];
    for (uri, expected) in &opened {
        assert!(qemu_opens(uri), "QEMU did not open {uri}");
        assert_eq!(&NbdExport::parse_uri(uri).unwrap(), expected, "{uri}");
        // What Display writes, QEMU opens too.
        assert!(qemu_opens(&expected.to_string()), "QEMU did not open {expected}");
    }
    let refused = [
        format!("nbd://127.0.0.1:{v4}/a b"),
        format!("nbd://127.0.0.1:{v4}/a%20b?x=1"),
        format!("nbd://127.0.0.1:{v4}/a%2"),
        format!("nbds://127.0.0.1:{v4}/a%20b"),
        format!("NBD://127.0.0.1:{v4}/a%20b"),
        format!("nbd://[::1:{v6}//slash"),
        format!("nbd://::1:{v6}//slash"),
        format!("nbd+unix:///u?socket={dir_path}{s}&x=1"),
        format!("nbd+unix:///u?socket={dir_path}{s};x=1"),
        format!("nbd+unix://localhost/u?socket={dir_path}{s}"),
        format!("nbd+unix:///u?path={dir_path}{s}"),
        "nbd+unix:///u".to_owned(),
    ];
    for uri in &refused {
        assert!(!qemu_opens(uri), "QEMU opened {uri}");
        assert!(NbdExport::parse_uri(uri).is_err(), "{uri} parsed");
    }
}
