use super::*;
use std::io::Write;

/// Builds a small but complete GGUF file: two metadata keys and one F32 tensor.
fn tiny_gguf(truncate_to: Option<usize>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&3u64.to_le_bytes()); // kv
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "llama.block_count");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&30u32.to_le_bytes());
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    s(&mut b, "a");
    s(&mut b, "b");
    s(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&16u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 64]);
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
