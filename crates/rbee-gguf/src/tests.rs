use super::*;
use std::io::Write;

/// A small but complete GGUF file (30 layers), cut to `truncate_to` bytes if given.
fn tiny_gguf(truncate_to: Option<usize>) -> Vec<u8> {
    let mut b = rbee_test_support::model::tiny_gguf(30);
    if let Some(n) = truncate_to {
        b.truncate(n);
    }
    b
}

fn write(bytes: &[u8]) -> (tempdir::Dir, std::path::PathBuf) {
    let d = tempdir::Dir::new();
    let p = d.0.join("m.gguf");
    File::create(&p).unwrap().write_all(bytes).unwrap();
    (d, p)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "rbee-gguf-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn reads_a_complete_file() {
    let (_d, p) = write(&tiny_gguf(None));
    let h = read_header(&p).unwrap();
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(h.layers(), Some(30));
    assert_eq!(h.vocab_size(), Some(2));
}

#[test]
fn rejects_empty_magic_only_random_and_truncated_files() {
    let (_d, p) = write(b"");
    assert!(matches!(read_header(&p), Err(GgufError::Empty)));
    let (_d, p) = write(b"GGUF");
    let e = read_header(&p).unwrap_err();
    assert!(matches!(e, GgufError::TruncatedHeader { .. }), "{e}");
    let (_d, p) = write(&[0x7f, b'E', b'L', b'F', 1, 2, 3, 4, 5, 6]);
    let e = read_header(&p).unwrap_err();
    assert!(e.to_string().contains("not a GGUF model"), "{e}");
    let full = tiny_gguf(None);
    let (_d, p) = write(&tiny_gguf(Some(full.len() - 10)));
    let e = read_header(&p).unwrap_err();
    assert!(matches!(e, GgufError::TruncatedData { .. }), "{e}");
    let (_d, p) = write(&tiny_gguf(Some(40)));
    let e = read_header(&p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn hostile_lengths_do_not_allocate() {
    let mut b = tiny_gguf(None);
    // kv count → u64::MAX
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let (_d, p) = write(&b);
    let e = read_header(&p).unwrap_err();
    assert!(matches!(e, GgufError::Corrupt(_)), "{e}");
}

#[test]
fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
    let full = tiny_gguf(None);
    for n in 0..full.len() {
        let (_d, p) = write(&full[..n]);
        assert!(read_header(&p).is_err(), "prefix of {n} bytes accepted");
    }
}
