//! A small, defensive reader of GGUF headers.
//!
//! Workers and the hive read a model's metadata (architecture, quantisation, context
//! length, layer count, vocabulary size) and check that the file is complete *before*
//! llama.cpp parses it: a truncated download or a random file gets an error that says what
//! is wrong instead of an abort deep inside C++. Every length read from the file is bounded,
//! so hostile input cannot make the reader allocate without limit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
const MAX_STRING: u64 = 16 << 20;
const MAX_COUNT: u64 = 1 << 24;
const MAX_DIMS: u32 = 8;

/// Why a file is not a usable GGUF model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read the model file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is empty.
    #[error("the model file is empty (0 bytes): the download or copy did not complete")]
    Empty,
    /// A directory, FIFO, device or socket.
    #[error("the model is not a regular file (a directory, FIFO or device)")]
    NotAFile,
    /// The first four bytes are not `GGUF`.
    #[error(
        "not a GGUF model: the file starts with {found:02x?}, a GGUF file starts with \"GGUF\""
    )]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// The header ends before it should.
    #[error(
        "the model file is truncated: it ends inside the GGUF header (at byte {offset} of {size})"
    )]
    TruncatedHeader {
        /// Where reading stopped.
        offset: u64,
        /// File size.
        size: u64,
    },
    /// Unsupported GGUF version.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    Version(u32),
    /// A length or type in the header is impossible.
    #[error("corrupt GGUF header: {0}")]
    Corrupt(String),
    /// Tensor data extends past the end of the file.
    #[error(
        "the model file is truncated: its tensors need {needed} bytes but the file has {size}"
    )]
    TruncatedData {
        /// Bytes the tensors need.
        needed: u64,
        /// File size.
        size: u64,
    },
}

/// A metadata value (arrays keep only their length and element type).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer.
    U64(u64),
    /// Any signed integer.
    I64(i64),
    /// Any float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
    /// An array: element type id and length (contents are skipped).
    Array {
        /// GGUF type id of the elements.
        elem_type: u32,
        /// Number of elements.
        len: u64,
    },
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// What a GGUF header holds, plus the size check of the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Every metadata key with its value.
    pub metadata: BTreeMap<String, Value>,
    /// File size in bytes.
    pub file_size: u64,
    /// Elements of all tensors together: the parameter count.
    pub parameters: u64,
}

impl GgufHeader {
    /// A header of `metadata` alone (no tensors, no file): for code that reads headers to
    /// be tested without writing GGUF files.
    pub fn from_metadata(metadata: BTreeMap<String, Value>) -> GgufHeader {
        GgufHeader {
            version: 3,
            tensor_count: 0,
            metadata,
            file_size: 0,
            parameters: 0,
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture")?.as_str()
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get("general.name")?.as_str()
    }

    /// A key under the architecture's namespace (`llama.block_count`).
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.metadata.get(&format!("{arch}.{key}"))?.as_u64()
    }

    /// `<arch>.context_length`.
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// `<arch>.block_count`: the number of transformer layers.
    pub fn layers(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }

    /// Bytes of KV cache one token of context takes in llama.cpp's default cache (keys and
    /// values in F16 in every layer): layers × KV heads × (key + value length) × 2. The
    /// head lengths default to `embedding_length / head_count`, the KV heads to the heads;
    /// MLA models (`attention.key_length_mla`) keep keys only. None when the header does
    /// not say: head counts per layer (an array, whose contents are not read) or layers
    /// without attention mixed in (`ssm.*`, `shortconv.*`, `full_attention_interval`,
    /// `attention.recurrent_layers`); a purely recurrent model (no heads) needs 0.
    pub fn kv_bytes_per_token(&self) -> Option<u64> {
        let arch = self.architecture()?;
        let hybrid = self.metadata.keys().any(|k| {
            k.strip_prefix(arch)
                .and_then(|k| k.strip_prefix('.'))
                .is_some_and(|k| {
                    k.starts_with("ssm.")
                        || k.starts_with("shortconv.")
                        || k == "full_attention_interval"
                        || k == "attention.recurrent_layers"
                })
        });
        if hybrid {
            return None;
        }
        let layers = self.layers()?;
        let heads = self.arch_u64("attention.head_count")?;
        let kv_heads = match self
            .metadata
            .get(&format!("{arch}.attention.head_count_kv"))
        {
            None => heads,
            Some(v) => v.as_u64()?,
        };
        let per_head = || Some(self.arch_u64("embedding_length")? / heads.max(1));
        let key = self.arch_u64("attention.key_length").or_else(per_head)?;
        let value = if self.arch_u64("attention.key_length_mla").is_some() {
            0
        } else {
            self.arch_u64("attention.value_length").unwrap_or(key)
        };
        Some(
            layers
                .saturating_mul(kv_heads)
                .saturating_mul(key.saturating_add(value))
                .saturating_mul(2),
        )
    }

    /// Bytes of KV cache llama.cpp allocates for `slots` sequences of `ctx_per_slot` tokens
    /// each, a stream per sequence rounded up to a multiple of 256 cells. None when
    /// [`GgufHeader::kv_bytes_per_token`] is.
    pub fn kv_cache_bytes(&self, slots: u32, ctx_per_slot: u32) -> Option<u64> {
        let cells = u64::from(ctx_per_slot).div_ceil(256) * 256 * u64::from(slots);
        Some(self.kv_bytes_per_token()?.saturating_mul(cells))
    }

    /// Length of `tokenizer.ggml.tokens`.
    pub fn vocab_size(&self) -> Option<u64> {
        match self.metadata.get("tokenizer.ggml.tokens")? {
            Value::Array { len, .. } => Some(*len),
            _ => None,
        }
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_token_id(&self) -> Option<u64> {
        self.metadata.get("tokenizer.ggml.eos_token_id")?.as_u64()
    }

    /// The quantisation name from `general.file_type` (`Q4_1`, `Q4_K_M`, …).
    pub fn quantization(&self) -> Option<String> {
        let ft = self.metadata.get("general.file_type")?.as_u64()?;
        Some(file_type_name(ft).map_or_else(|| format!("type{ft}"), str::to_owned))
    }
}

/// Name of a llama.cpp `llama_ftype` value.
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// Bytes per block and elements per block of each ggml tensor type a GGUF file may hold
/// (ggml.h's `ggml_type`, ggml-common.h's block layouts); `None` for an unknown type.
fn ggml_type_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (4, 1),
        1 | 30 => (2, 1),
        2 => (18, 32),
        3 => (20, 32),
        6 => (22, 32),
        7 => (24, 32),
        8 => (34, 32),
        9 => (36, 32),
        10 => (84, 256),
        11 => (110, 256),
        12 => (144, 256),
        13 => (176, 256),
        14 => (210, 256),
        15 => (292, 256),
        16 => (66, 256),
        17 => (74, 256),
        18 => (98, 256),
        19 => (50, 256),
        20 => (18, 32),
        21 => (110, 256),
        22 => (82, 256),
        23 => (136, 256),
        24 => (1, 1),
        25 => (2, 1),
        26 => (4, 1),
        27 | 28 => (8, 1),
        29 => (56, 256),
        34 => (54, 256),
        35 => (66, 256),
        39 => (17, 32),
        40 => (36, 64),
        41 => (18, 128),
        42 => (18, 64),
        _ => return None,
    })
}

/// llama.cpp's `LLAMA_MAX_LAYERS`: more layers abort it.
pub const MAX_LAYERS: u64 = 512;
/// The longest training context accepted (16 Mi tokens; the longest models have ~10 M).
pub const MAX_CONTEXT: u64 = 1 << 24;
/// The widest embedding accepted (the largest models have 16 Ki–32 Ki).
pub const MAX_EMBEDDING: u64 = 1 << 20;
/// The most attention heads accepted.
pub const MAX_HEADS: u64 = 1 << 14;

/// Checks the hyperparameters llama.cpp asserts on (or overflows with) before it gets the
/// file: layers, training context, embedding width, head counts, and a vocabulary.
fn check_hyperparameters(h: &GgufHeader) -> Result<(), GgufError> {
    let bad = |m: String| Err(GgufError::Corrupt(m));
    let Some(arch) = h.architecture() else {
        return bad("general.architecture is missing".into());
    };
    let arch = arch.to_owned();
    let within = |key: &str, lo: u64, hi: u64, required: bool| -> Result<(), GgufError> {
        match h.metadata.get(&format!("{arch}.{key}")) {
            None if required => bad(format!("{arch}.{key} is missing")),
            None => Ok(()),
            // Per-layer arrays (some architectures) are checked by length only.
            Some(Value::Array { len, .. }) if *len <= MAX_LAYERS => Ok(()),
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(()),
                Some(n) => bad(format!("{arch}.{key} is {n}, outside {lo}..={hi}")),
                None => bad(format!("{arch}.{key} is not a number")),
            },
        }
    };
    within("block_count", 1, MAX_LAYERS, true)?;
    within("context_length", 1, MAX_CONTEXT, false)?;
    within("embedding_length", 1, MAX_EMBEDDING, false)?;
    within("attention.head_count", 1, MAX_HEADS, false)?;
    within("attention.head_count_kv", 0, MAX_HEADS, false)?;
    if h.vocab_size() == Some(0) {
        return bad("tokenizer.ggml.tokens is empty".into());
    }
    Ok(())
}

/// Skips up to this many bytes by reading through the buffer rather than seeking.
const SKIP_BY_READING: u64 = 1 << 16;

struct Reader<R> {
    inner: R,
    offset: u64,
    size: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| self.eof(e))?;
        self.offset += N as u64;
        Ok(buf)
    }

    fn eof(&self, e: std::io::Error) -> GgufError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            GgufError::TruncatedHeader {
                offset: self.offset,
                size: self.size,
            }
        } else {
            GgufError::Io(e)
        }
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(GgufError::Corrupt(format!(
                "{what} count {n} is implausible"
            )));
        }
        Ok(n)
    }

    fn len_checked(&mut self, what: &str) -> Result<u64, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING || self.offset + len > self.size {
            return Err(if self.offset + len > self.size && len <= MAX_STRING {
                GgufError::TruncatedHeader {
                    offset: self.offset,
                    size: self.size,
                }
            } else {
                GgufError::Corrupt(format!("{what} of length {len} at byte {}", self.offset))
            });
        }
        Ok(len)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.len_checked(what)?;
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf).map_err(|e| self.eof(e))?;
        self.offset += len;
        String::from_utf8(buf).map_err(|_| GgufError::Corrupt(format!("{what} is not UTF-8")))
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        if self.offset + n > self.size {
            return Err(GgufError::TruncatedHeader {
                offset: self.offset,
                size: self.size,
            });
        }
        if n <= SKIP_BY_READING {
            // Seeking a BufReader throws its buffer away: skipping the many small array
            // elements of a vocabulary that way cost 300 ms per header.
            let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
            if copied < n {
                return Err(self.eof(std::io::ErrorKind::UnexpectedEof.into()));
            }
        } else {
            self.inner.seek(SeekFrom::Current(n as i64))?;
        }
        self.offset += n;
        Ok(())
    }

    fn scalar(&mut self, t: u32) -> Result<Value, GgufError> {
        Ok(match t {
            0 => Value::U64(u64::from(self.bytes::<1>()?[0])),
            1 => Value::I64(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string("string value")?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            other => {
                return Err(GgufError::Corrupt(format!(
                    "unknown value type {other} at byte {}",
                    self.offset
                )))
            }
        })
    }

    fn value(&mut self, t: u32) -> Result<Value, GgufError> {
        if t != 9 {
            return self.scalar(t);
        }
        let elem_type = self.u32()?;
        let len = self.count("array element")?;
        let fixed = match elem_type {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match (fixed, elem_type) {
            (Some(w), _) => self.skip(w * len)?,
            (None, 8) => {
                for _ in 0..len {
                    let l = self.len_checked("array string")?;
                    self.skip(l)?;
                }
            }
            _ => {
                return Err(GgufError::Corrupt(format!(
                    "array of unsupported element type {elem_type}"
                )))
            }
        }
        Ok(Value::Array { elem_type, len })
    }
}

/// Reads and checks the header of the GGUF file at `path`: a regular file, magic, version,
/// every metadata value, every tensor description (known type, aligned offset, a size that
/// does not overflow), that the tensor data fits in the file, and the hyperparameters
/// llama.cpp asserts on.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    // Before opening: a FIFO would block the open, a device never end.
    if !std::fs::metadata(path)?.is_file() {
        return Err(GgufError::NotAFile);
    }
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size == 0 {
        return Err(GgufError::Empty);
    }
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        offset: 0,
        size,
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r.inner, &mut magic)?;
    r.offset = got as u64;
    if magic[..got] != MAGIC[..got] {
        return Err(GgufError::BadMagic {
            found: magic[..got].to_vec(),
        });
    }
    if got < 4 {
        return Err(GgufError::TruncatedHeader { offset: 0, size });
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.count("tensor")?;
    let kv_count = r.count("metadata")?;
    let mut metadata = BTreeMap::new();
    let mut alignment = 32u64;
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        let t = r.u32()?;
        let v = r.value(t)?;
        if key == "general.alignment" {
            alignment = v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                GgufError::Corrupt("general.alignment is not a power of two".into())
            })?;
        }
        metadata.insert(key, v);
    }
    let mut data_needed = 0u64;
    let mut parameters = 0u64;
    for _ in 0..tensor_count {
        let name = r.string("tensor name")?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Corrupt(format!(
                "tensor {name} has {n_dims} dimensions"
            )));
        }
        let mut elems = 1u64;
        for _ in 0..n_dims {
            elems = elems
                .checked_mul(r.u64()?)
                .ok_or_else(|| GgufError::Corrupt(format!("tensor {name} is too large")))?;
        }
        parameters = parameters.saturating_add(elems);
        let ty = r.u32()?;
        let offset = r.u64()?;
        let (block_bytes, block_elems) = ggml_type_block(ty)
            .ok_or_else(|| GgufError::Corrupt(format!("tensor {name} has an unknown type {ty}")))?;
        let end = elems
            .div_ceil(block_elems)
            .checked_mul(block_bytes)
            .and_then(|b| offset.checked_add(b))
            .ok_or_else(|| GgufError::Corrupt(format!("tensor {name} is too large")))?;
        if offset % alignment != 0 {
            return Err(GgufError::Corrupt(format!(
                "tensor {name}'s data offset {offset} is not aligned to {alignment}"
            )));
        }
        data_needed = data_needed.max(end);
    }
    let data_start = r.offset.div_ceil(alignment) * alignment;
    let needed = data_start.saturating_add(data_needed);
    if needed > size {
        return Err(GgufError::TruncatedData { needed, size });
    }
    let header = GgufHeader {
        version,
        tensor_count,
        metadata,
        file_size: size,
        parameters,
    };
    check_hyperparameters(&header)?;
    Ok(header)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
