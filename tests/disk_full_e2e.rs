//! Disk full, end to end: the real `pigeon-broker` on an 8 MiB tmpfs.
//! Produces until the disk is full; they must fail with `DiskFull` (code 26)
//! and a clear message, nothing acknowledged may be damaged, and produces
//! must succeed again once space is freed.
//!
//! Needs root (to mount a tmpfs). Without it, or if the mount fails, the
//! test says so on stdout and passes without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pigeon_client::protocol::ErrorCode;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, runtime};

/// Unmounts the tmpfs when dropped, also when the test fails.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir: {e}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Mount(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !status.is_ok_and(|s| s.success()) {
            // Still busy: detach it so that it goes once released.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("record-{i:08}-").into_bytes();
    v.resize(4096, (i % 251) as u8);
    v
}

#[test]
fn disk_full_fails_produces_clearly_keeps_data_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The data dir is the mount point itself, so that the broker's own log
    // file (next to the data dir) stays off the small disk.
    let data = tmp.path().join("data");
    let _mount = match Mount::tmpfs(&data, "8m") {
        Ok(mount) => mount,
        Err(why) => {
            println!("disk_full_e2e NOT RUN: {why} (needs root and a working `mount -t tmpfs`)");
            return;
        }
    };
    // Space to give back later.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).expect("pre-fill");
    let broker = Broker::start(&data, &["--segment-bytes", "1048576"]);
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        client.create_topic("t", 1).await;
        let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = 0u64;
        let failure = loop {
            assert!(next < 10_000, "the 8 MiB disk never filled up");
            let values: Vec<Vec<u8>> = (next..next + 4).map(value).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let response = client.produce("t", 0, &refs).await;
            if response.error_code != ErrorCode::None {
                break response;
            }
            assert_eq!(response.base_offset, next, "offsets are dense");
            for (i, v) in values.into_iter().enumerate() {
                acked.push((next + i as u64, v));
            }
            next += 4;
        };
        println!(
            "disk full after {} acknowledged records ({} KiB): {:?}: {}",
            acked.len(),
            acked.len() * 4,
            failure.error_code,
            failure.error_message
        );
        assert_eq!(
            failure.error_code,
            ErrorCode::DiskFull,
            "{}",
            failure.error_message
        );
        assert_eq!(failure.error_code.as_u16(), 26);
        let message = failure.error_message.to_lowercase();
        assert!(
            message.contains("space") || message.contains("full"),
            "the message says the disk is full: {}",
            failure.error_message
        );
        // Nothing acknowledged is damaged (every batch read is CRC-checked).
        assert!(
            client.read_values("t", 0, 0).await == acked,
            "acknowledged data intact"
        );

        std::fs::remove_file(&filler).expect("free space");
        let deadline = Instant::now() + Duration::from_secs(20);
        let resumed = loop {
            let response = client.produce("t", 0, &[&value(next)]).await;
            if response.error_code == ErrorCode::None {
                break response;
            }
            assert!(
                Instant::now() < deadline,
                "produces still fail after space was freed: {:?}: {}",
                response.error_code,
                response.error_message
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(resumed.base_offset, next, "the failed appends left no gap");
        acked.push((next, value(next)));
        next += 1;
        for i in next..next + 40 {
            let response = client.produce("t", 0, &[&value(i)]).await;
            assert_eq!(
                response.error_code,
                ErrorCode::None,
                "{}",
                response.error_message
            );
            acked.push((i, value(i)));
        }
        assert!(
            client.read_values("t", 0, 0).await == acked,
            "all data intact"
        );
    });
    // Survives a restart too.
    let mut broker = broker;
    broker.terminate();
    broker.restart();
    runtime().block_on(async {
        let mut client = RawClient::connect(broker.addr).await;
        let values = client.read_values("t", 0, 0).await;
        assert!(!values.is_empty());
        assert!(
            values.iter().all(|(o, v)| *v == value(*o)),
            "intact after restart"
        );
    });
    drop(broker);
}
