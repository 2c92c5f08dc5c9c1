//! Helpers for the file tests: a host that serves only the roots a test chooses, files of
//! pseudo-random content written and hashed in pieces (a large file never sits in memory).

use std::io::Write;
use std::path::Path;

use crate::{Cli, ControlPlane, Daemon};

/// Enrols and starts a daemon named `name` that serves files under `roots` only, and waits
/// until the host is online.
pub async fn add_host_serving(cp: &ControlPlane, cli: &Cli, name: &str, roots: &[&Path]) -> Daemon {
    cp.add_online_host_with(cli, name, &[], |daemon| daemon.set_file_roots(roots))
        .await
}

/// Writes `size` bytes of pseudo-random content (an xorshift stream from `seed`) to `path`.
pub fn write_random(path: &Path, size: usize, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    let mut state = seed | 1;
    let mut written = 0;
    let mut block = [0u8; 64 * 1024];
    while written < size {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let take = block.len().min(size - written);
        file.write_all(&block[..take]).expect("write file");
        written += take;
    }
    file.flush().expect("flush file");
}

/// The lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    zpanel_shared::fsutil::sha256_file(path).expect("read file")
}
