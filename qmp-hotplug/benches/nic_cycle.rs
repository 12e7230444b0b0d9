//! One NIC hot-add + hot-del cycle against real QEMU 7.2 with the project's test guest
//! (TCG): `getfd`, `netdev_add`, `device_add`, then `device_del`, waiting for the guest's
//! `DEVICE_DELETED`, and `netdev_del`, with the snapshot reads each operation makes; on the
//! `pc` machine (bus 0) and on `q35` (into an empty `pcie-root-port`).
//!
//! Besides criterion's wall-clock figures it prints where the time went: this process's
//! CPU time (user + system, from `getrusage`) is the time spent in our code, the rest is
//! waiting for QEMU and the guest.
//!
//! `cargo bench -p qmp-hotplug --bench nic_cycle`. Without QEMU or the guest the group is
//! skipped with a printed reason; `QMP_REQUIRE_QEMU=1` makes that a failure.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use hostdev::tap::Tap;
use nix::sys::resource::{UsageWho, getrusage};
use qemu_launcher::{Qemu, QemuBuilder};
use qmp_client::Client;
use qmp_hotplug::{Hotplug, NicSpec, RemoveOptions};

fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().unsigned_abs())
            + Duration::from_micros(t.tv_usec().unsigned_abs())
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

fn nic_cycle(c: &mut Criterion) {
    cycle_on(c, "pc", 0);
    // q35 hot-plugs into root ports only: one empty port, used by every cycle.
    cycle_on(c, "q35", 1);
}

fn cycle_on(c: &mut Criterion, machine: &str, root_ports: u8) {
    let builder = QemuBuilder::new().machine(machine).root_ports(root_ports);
    let Some(qemu) = Qemu::start_guest_or_skip_with(builder) else {
        eprintln!("nic_cycle: skipped, no QEMU or test guest");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let hotplug = rt.block_on(async {
        Hotplug::new(Client::connect(qemu.qmp_path()).await.expect("connect to QEMU"))
    });
    // One tap for every cycle: each add passes QEMU a fresh copy, which netdev_del closes.
    let tap = Tap::open("qhbench%d", 1).expect("open a tap device");
    let spec = NicSpec::new("bench");
    let (mut wall, mut ours, mut cycles) = (Duration::ZERO, Duration::ZERO, 0u64);

    let mut group = c.benchmark_group(format!("nic_hotplug_cycle_{machine}"));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("add_then_del_with_guest", |b| {
        b.iter_custom(|iterations| {
            let (cpu_before, start) = (cpu_time(), Instant::now());
            for _ in 0..iterations {
                rt.block_on(async {
                    let id = hotplug
                        .add_nic(&spec, tap.queues(), &[] as &[OwnedFd])
                        .await
                        .expect("hot-add")
                        .id;
                    hotplug
                        .del_nic(&id.to_string(), &RemoveOptions::new(Duration::from_secs(20)))
                        .await
                        .expect("hot-del");
                });
            }
            let elapsed = start.elapsed();
            wall += elapsed;
            ours += cpu_time().saturating_sub(cpu_before);
            cycles += iterations;
            elapsed
        });
    });
    group.finish();

    let per_cycle = |total: Duration| total / u32::try_from(cycles.max(1)).unwrap_or(u32::MAX);
    eprintln!(
        "nic_cycle {machine}: {cycles} cycles, {:.1} ms wall per cycle, of which our process's CPU {:.3} ms \
         ({:.2}%); QEMU and the guest {:.1} ms",
        per_cycle(wall).as_secs_f64() * 1e3,
        per_cycle(ours).as_secs_f64() * 1e3,
        100.0 * ours.as_secs_f64() / wall.as_secs_f64().max(f64::MIN_POSITIVE),
        per_cycle(wall.saturating_sub(ours)).as_secs_f64() * 1e3,
    );
}

criterion_group!(benches, nic_cycle);
criterion_main!(benches);
