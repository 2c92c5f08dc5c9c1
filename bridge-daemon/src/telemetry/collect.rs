//! One `MetricSample` of this host: CPU and memory through sysinfo (only those refreshed),
//! the rest straight from `/proc` and `/sys`. Rates (disk I/O, network) are counter
//! differences since the collector's previous measurement, per second.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use sysinfo::System;
use zpanel_proto::{DiskUsage, MetricSample, NetworkRate};

/// File systems that hold no data of this host's own disks: kernel and memory file
/// systems, read-only images that are always full, and network shares (counted on the
/// server, and whose `statfs` can hang when the server is gone).
const NOT_DISKS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "ceph",
    "cgroup",
    "cgroup2",
    "cifs",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "glusterfs",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfs",
    "nfs4",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "smb3",
    "smbfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "9p",
];

/// Takes samples; keeps what rates are computed from between two of them.
pub struct Collector {
    /// CPU times and memory only: nothing else of it is refreshed.
    system: System,
    counters: Counters,
}

impl Collector {
    /// A collector with a first measurement, so its first sample has rates.
    pub fn new() -> Collector {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Collector {
            system,
            counters: Counters::read(),
        }
    }

    /// The host now; rates and CPU since the previous sample (or since `new`).
    pub fn sample(&mut self) -> MetricSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let counters = Counters::read();
        let seconds = counters
            .at
            .duration_since(self.counters.at)
            .as_secs_f64()
            .max(0.001);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let networks = counters
            .networks
            .iter()
            .filter_map(|(interface, &(rx, tx))| {
                let &(rx_before, tx_before) = self.counters.networks.get(interface)?;
                Some(NetworkRate {
                    interface: interface.clone(),
                    rx_bps: rate(rx, rx_before),
                    tx_bps: rate(tx, tx_before),
                })
            })
            .collect();
        let load = System::load_average();
        let memory_total = self.system.total_memory();
        let swap_total = self.system.total_swap();
        let sample = MetricSample {
            at_ms: zpanel_shared::unix_now_ms(),
            cpu_percent: f64::from(self.system.global_cpu_usage()),
            cpu_cores: self
                .system
                .cpus()
                .iter()
                .map(|cpu| f64::from(cpu.cpu_usage()))
                .collect(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            memory_total,
            memory_used: memory_total.saturating_sub(self.system.available_memory()),
            swap_total,
            swap_used: swap_total.saturating_sub(self.system.free_swap()),
            disks: disks(),
            disk_read_bps: rate(counters.disk_read, self.counters.disk_read),
            disk_write_bps: rate(counters.disk_written, self.counters.disk_written),
            networks,
            uptime_seconds: System::uptime(),
            processes: count_processes(),
        };
        self.counters = counters;
        sample
    }
}

/// Counters that only grow, read together.
struct Counters {
    at: Instant,
    /// Bytes read and written by the host's disks since boot.
    disk_read: u64,
    disk_written: u64,
    /// Bytes received and sent by each interface but loopback since it came up.
    networks: BTreeMap<String, (u64, u64)>,
}

impl Counters {
    fn read() -> Counters {
        let (disk_read, disk_written) = std::fs::read_to_string("/proc/diskstats")
            .map(|text| disk_bytes(&text, is_disk))
            .unwrap_or_default();
        let networks = std::fs::read_to_string("/proc/net/dev")
            .map(|text| network_bytes(&text))
            .unwrap_or_default();
        Counters {
            at: Instant::now(),
            disk_read,
            disk_written,
            networks,
        }
    }
}

/// Bytes read and written in `/proc/diskstats`, over the devices `counted` keeps.
fn disk_bytes(diskstats: &str, counted: impl Fn(&str) -> bool) -> (u64, u64) {
    const SECTOR: u64 = 512;
    let mut total = (0u64, 0u64);
    for line in diskstats.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(read), Some(written)) = (fields.get(2), fields.get(5), fields.get(9))
        else {
            continue;
        };
        if !counted(name) {
            continue;
        }
        let sectors = |field: &str| field.parse::<u64>().unwrap_or(0);
        total.0 = total.0.saturating_add(sectors(read).saturating_mul(SECTOR));
        total.1 = total
            .1
            .saturating_add(sectors(written).saturating_mul(SECTOR));
    }
    total
}

/// Whether a block device's I/O is the host's disks': a whole device (not a partition of
/// one), not a loop or RAM device, and not built on others (device mapper, RAID), whose
/// I/O its members already count.
fn is_disk(name: &str) -> bool {
    if ["loop", "ram", "zram"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return false;
    }
    let device = Path::new("/sys/class/block").join(name.replace('/', "!"));
    if device.join("partition").exists() {
        return false;
    }
    std::fs::read_dir(device.join("slaves")).map_or(true, |mut members| members.next().is_none())
}

/// Bytes received and sent per interface in `/proc/net/dev`, loopback left out.
fn network_bytes(net_dev: &str) -> BTreeMap<String, (u64, u64)> {
    net_dev
        .lines()
        .filter_map(|line| {
            let (interface, counters) = line.split_once(':')?;
            let interface = interface.trim();
            let counters: Vec<u64> = counters
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            let (&rx, &tx) = (counters.first()?, counters.get(8)?);
            (interface != "lo").then(|| (interface.to_string(), (rx, tx)))
        })
        .collect()
}

/// Usage of every mounted file system on the host's disks, each device once (its first
/// mount: a bind mount shows the same numbers).
fn disks() -> Vec<DiskUsage> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    real_mounts(&mounts)
        .into_iter()
        .filter(|mount| seen.insert(mount.device.clone()))
        .filter_map(|mut mount| {
            let usage = rustix::fs::statvfs(mount.mount.as_str()).ok()?;
            mount.total = usage.f_blocks.saturating_mul(usage.f_frsize);
            let free = usage.f_bfree.saturating_mul(usage.f_frsize);
            mount.used = mount.total.saturating_sub(free);
            (mount.total > 0).then_some(mount)
        })
        .collect()
}

/// The mounts of `/proc/self/mounts` whose file system is on a disk, in mount order.
fn real_mounts(mounts: &str) -> Vec<DiskUsage> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (device, mount, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            let remote_fuse = fs_type.starts_with("fuse.");
            (!remote_fuse && !NOT_DISKS.contains(&fs_type)).then(|| DiskUsage {
                mount: unescape_mount_field(mount),
                device: unescape_mount_field(device),
                fs_type: fs_type.to_string(),
                ..DiskUsage::default()
            })
        })
        .collect()
}

/// A field of `/proc/self/mounts`, where the kernel writes space, tab, newline and
/// backslash as octal escapes (`\040`).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes
            .get(at + 1..at + 4)
            .filter(|_| bytes[at] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                at += 4;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Processes on the host: the numbered entries of `/proc` (threads are not listed there).
pub fn count_processes() -> u32 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let count = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            !name.is_empty() && name.iter().all(u8::is_ascii_digit)
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_sample_of_this_machine_is_sane() {
        let mut collector = Collector::new();
        std::thread::sleep(Duration::from_millis(200));
        let sample = collector.sample();
        let before = zpanel_shared::unix_now_ms();
        assert!((before - 5_000..=before).contains(&sample.at_ms));
        assert!((0.0..=100.0).contains(&sample.cpu_percent));
        assert!(!sample.cpu_cores.is_empty());
        assert!(
            sample
                .cpu_cores
                .iter()
                .all(|core| (0.0..=100.0).contains(core)),
            "{:?}",
            sample.cpu_cores
        );
        assert!(sample.load1 >= 0.0 && sample.load15 >= 0.0);
        assert!(sample.memory_total > 0 && sample.memory_used <= sample.memory_total);
        assert!(sample.swap_used <= sample.swap_total);
        assert!(sample.uptime_seconds > 0);
        // at least this test's own process
        assert!(sample.processes >= 1);
        let root = sample
            .disks
            .iter()
            .find(|disk| disk.mount == "/")
            .unwrap_or_else(|| panic!("no / in {:?}", sample.disks));
        assert!(root.total > 0 && root.used <= root.total);
        for disk in &sample.disks {
            assert!(!NOT_DISKS.contains(&disk.fs_type.as_str()), "{disk:?}");
        }
        let devices: HashSet<&str> = sample.disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(devices.len(), sample.disks.len(), "{:?}", sample.disks);
        assert!(sample.disk_read_bps >= 0.0 && sample.disk_write_bps >= 0.0);
        assert!(sample.networks.iter().all(|n| n.interface != "lo"));
        assert!(
            sample
                .networks
                .iter()
                .all(|n| n.rx_bps >= 0.0 && n.tx_bps >= 0.0)
        );
    }

    #[test]
    fn only_whole_disks_count_and_sectors_are_512_bytes() {
        let diskstats = "   7       0 loop0 9 0 100 0 9 0 100 0 0 0 0\n \
                         254       0 vda 10 0 8 0 5 0 4 0 0 0 0\n \
                         254       1 vda1 10 0 8 0 5 0 4 0 0 0 0\n \
                         253       0 zram0 10 0 8 0 5 0 4 0 0 0 0\n \
                         8       0 sdb 1 0 2 0 1 0 2 0 0 0 0\n";
        let counted = |name: &str| ["vda", "sdb"].contains(&name);
        assert_eq!(disk_bytes(diskstats, counted), (10 * 512, 6 * 512));
        assert!(!is_disk("loop0") && !is_disk("ram0") && !is_disk("zram0"));
    }

    #[test]
    fn interfaces_but_loopback_with_their_byte_counters() {
        let net_dev = "Inter-|   Receive                            |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n    \
             lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  \
             eth0: 2000 20 0 0 0 0 0 0 3000 30 0 0 0 0 0 0\n";
        assert_eq!(
            network_bytes(net_dev),
            BTreeMap::from([("eth0".to_string(), (2000, 3000))])
        );
    }

    #[test]
    fn only_file_systems_on_disks_with_their_names_unescaped() {
        let mounts = "proc /proc proc rw 0 0\n\
                      /dev/vda / ext4 rw 0 0\n\
                      tmpfs /dev/shm tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                      overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n\
                      /dev/loop1 /snap/core/1 squashfs ro 0 0\n\
                      server:/export /mnt/nfs nfs4 rw 0 0\n\
                      sshfs#me@host: /mnt/ssh fuse.sshfs rw 0 0\n\
                      /dev/sdb1 /mnt/my\\040disk xfs rw 0 0\n";
        let found: Vec<(String, String)> = real_mounts(mounts)
            .into_iter()
            .map(|m| (m.mount, m.fs_type))
            .collect();
        assert_eq!(
            found,
            [
                ("/".to_string(), "ext4".to_string()),
                ("/mnt/my disk".to_string(), "xfs".to_string())
            ]
        );
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("trailing\\04"), "trailing\\04");
    }
}
