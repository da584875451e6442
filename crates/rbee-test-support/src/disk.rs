//! A size-limited tmpfs mounted over a directory, for "disk full" and read-only disk tests
//! (needs root).

use std::path::{Path, PathBuf};

/// The mount; unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` on `dir` (created), or prints why the calling test skips
    /// (fails it under `RBEE_TEST_STRICT`) and returns `None`.
    pub fn mount(dir: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        crate::skip_unless!(ok, "cannot mount a small tmpfs (needs root)");
        Some(SmallDisk(dir.to_path_buf()))
    }
}

impl SmallDisk {
    /// Remounts it read-only (as a full or failing disk the kernel turned read-only).
    pub fn read_only(&self) {
        let ok = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot remount {} read-only", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
