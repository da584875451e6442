//! Free space of a filesystem (the one statvfs call rbee makes).

use std::path::Path;

/// (total, available to unprivileged users) bytes of the filesystem holding `path`, or of
/// its nearest existing ancestor; `None` when statvfs fails.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct; the path is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        let block = s.f_frsize as u64;
        Some((s.f_blocks as u64 * block, s.f_bavail as u64 * block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_reports_its_nearest_existing_ancestor() {
        let (total, avail) = space(Path::new("/nonexistent/rbee/below/root")).unwrap();
        assert!(total > 0 && avail <= total);
    }
}
