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

fn header(arch_keys: &[(&str, Value)]) -> GgufHeader {
    let mut metadata = BTreeMap::new();
    metadata.insert("general.architecture".into(), Value::String("llama".into()));
    for (k, v) in arch_keys {
        metadata.insert(format!("llama.{k}"), v.clone());
    }
    GgufHeader::from_metadata(metadata)
}

#[test]
fn kv_bytes_per_token_follows_the_attention_shape() {
    use Value::U64;
    let base = [
        ("block_count", U64(30)),
        ("embedding_length", U64(576)),
        ("attention.head_count", U64(9)),
    ];
    // Grouped-query attention: 3 KV heads of 576 / 9 = 64, keys and values, F16.
    let gqa = header(&[&base[..], &[("attention.head_count_kv", U64(3))]].concat());
    assert_eq!(gqa.kv_bytes_per_token(), Some(30 * 3 * (64 + 64) * 2));
    // Without head_count_kv every head keeps keys and values.
    assert_eq!(header(&base).kv_bytes_per_token(), Some(30 * 9 * 128 * 2));
    // Explicit key and value lengths win over embedding_length / head_count.
    let explicit = header(
        &[
            &base[..],
            &[
                ("attention.head_count_kv", U64(1)),
                ("attention.key_length", U64(192)),
                ("attention.value_length", U64(128)),
            ],
        ]
        .concat(),
    );
    assert_eq!(explicit.kv_bytes_per_token(), Some(30 * (192 + 128) * 2));
    // A per-layer array of KV heads (hybrid models mark recurrent layers with 0): unknown.
    let per_layer = header(
        &[
            &base[..],
            &[(
                "attention.head_count_kv",
                Value::Array {
                    elem_type: 4,
                    len: 30,
                },
            )],
        ]
        .concat(),
    );
    assert_eq!(per_layer.kv_bytes_per_token(), None);
    // Layers without attention mixed in: unknown.
    for hybrid_key in [
        "ssm.conv_kernel",
        "shortconv.l_cache",
        "full_attention_interval",
    ] {
        let h = header(&[&base[..], &[(hybrid_key, U64(4))]].concat());
        assert_eq!(h.kv_bytes_per_token(), None, "{hybrid_key}");
    }
    // MLA (DeepSeek): one compressed head of 576, keys only.
    let mla = header(
        &[
            &base[..],
            &[
                ("attention.head_count_kv", U64(1)),
                ("attention.key_length", U64(576)),
                ("attention.value_length", U64(512)),
                ("attention.key_length_mla", U64(192)),
            ],
        ]
        .concat(),
    );
    assert_eq!(mla.kv_bytes_per_token(), Some(30 * 576 * 2));
    // A recurrent model has no heads and no cache; no head count at all: unknown.
    let recurrent = header(&[&base[..2], &[("attention.head_count", U64(0))]].concat());
    assert_eq!(recurrent.kv_bytes_per_token(), Some(0));
    assert_eq!(header(&base[..2]).kv_bytes_per_token(), None);
}

#[test]
fn the_test_models_kv_cache_is_23_kib_a_token() {
    let model = rbee_test_support::model::test_model();
    rbee_test_support::skip_unless!(model.is_some(), "no test model (scripts/fetch-test-model)");
    let model = model.unwrap();
    // SmolLM2-135M: 30 layers, 3 KV heads of 64.
    let h = read_header(&model).unwrap();
    assert_eq!(h.kv_bytes_per_token(), Some(23_040));
}
