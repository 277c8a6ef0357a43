//! A GGUF header reader: enough of the format to tell a whole model file from a truncated or
//! foreign one, and to estimate the KV cache it needs (layers, heads, head sizes).
//!
//! [`read_header`] reads the magic, the version, every metadata entry (keeping the numbers the
//! memory estimate needs and skipping the rest, tokenizer arrays included) and every tensor
//! description, then checks that the tensor data the header promises fits in the file: a
//! partly copied model fails here instead of in `llama-server` at load time. It never reads
//! the tensor data itself, so checking a 2 GB model reads a few megabytes.
//!
//! [`GgufBuilder`] writes small, valid GGUF files (no real weights) for tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Metadata entries accepted at most (real models have a few dozen).
const MAX_METADATA_ENTRIES: u64 = 1 << 20;
/// Tensors accepted at most (real models have a few hundred to a few thousand).
const MAX_TENSORS: u64 = 1 << 20;
/// Longest metadata string or key accepted (chat templates are a few KiB).
const MAX_STRING_BYTES: u64 = 16 << 20;
/// Longest metadata array accepted (tokenizer vocabularies are up to a few hundred thousand).
const MAX_ARRAY_ITEMS: u64 = 1 << 26;
/// Dimensions of one tensor at most (ggml has 4).
const MAX_DIMS: u32 = 8;

/// Why a file is not a usable GGUF model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: it starts with {found:?}, not \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: String,
    },
    /// A GGUF version this reader does not know (1 is obsolete; 2 and 3 are read).
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends inside the header.
    #[error("the file ends inside the GGUF header ({what}, at byte {offset}): it is truncated")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where the file ended.
        offset: u64,
    },
    /// A count or length is implausibly large: a corrupt header.
    #[error("corrupt GGUF header: {what} is {value}, more than the {limit} accepted")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The largest value accepted.
        limit: u64,
    },
    /// A metadata value type this reader does not know.
    #[error("corrupt GGUF header: unknown metadata value type {value_type} for key {key:?}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id.
        value_type: u32,
    },
    /// A tensor's shape does not fit its type's block size.
    #[error(
        "corrupt GGUF header: tensor {name:?} has {elements} elements, not a multiple of its block size {block}"
    )]
    BadTensorShape {
        /// The tensor.
        name: String,
        /// Its element count.
        elements: u64,
        /// Its type's block size.
        block: u64,
    },
    /// The tensor data the header describes extends past the end of the file.
    #[error(
        "the file is truncated: its tensors need {needed} bytes but it has {actual} \
         (a partial download or copy?)"
    )]
    DataTruncated {
        /// Bytes the header says the file has at least.
        needed: u64,
        /// Bytes it has.
        actual: u64,
    },
}

/// What the header of a GGUF file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// Tensors described.
    pub tensor_count: u64,
    /// Metadata entries.
    pub metadata_count: u64,
    /// `general.architecture`, e.g. `llama` or `qwen2`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `<arch>.block_count`: transformer layers.
    pub block_count: Option<u64>,
    /// `<arch>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<arch>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<arch>.attention.head_count_kv` (the largest, when given per layer).
    pub head_count_kv: Option<u64>,
    /// `<arch>.attention.key_length`: the size of one key head.
    pub key_length: Option<u64>,
    /// `<arch>.attention.value_length`: the size of one value head.
    pub value_length: Option<u64>,
    /// `<arch>.context_length`: the context the model was trained for.
    pub context_length: Option<u64>,
    /// Entries of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<u64>,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// Where tensor data starts.
    pub data_offset: u64,
    /// Bytes the tensor data needs from `data_offset`, when every tensor type is known.
    pub tensor_data_bytes: Option<u64>,
}

impl GgufInfo {
    /// Bytes of KV cache one token takes with llama.cpp's default f16 cache: keys and values
    /// of every layer and KV head. `None` when the header lacks the numbers.
    pub fn kv_bytes_per_token(&self) -> Option<u64> {
        let layers = self.block_count?;
        let heads = self.head_count?;
        let kv_heads = self.head_count_kv.unwrap_or(heads);
        let head_dim = self.embedding_length?.checked_div(heads)?;
        let key = self.key_length.unwrap_or(head_dim);
        let value = self.value_length.unwrap_or(head_dim);
        Some(layers * kv_heads * (key + value) * 2)
    }
}

/// Reads and checks the header of the GGUF file at `path`.
pub fn read_header(path: &Path) -> Result<GgufInfo, GgufError> {
    let io = |source| GgufError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    let mut reader = Reader {
        inner: BufReader::with_capacity(64 * 1024, file),
        offset: 0,
        path: path.display().to_string(),
    };
    reader.header(file_bytes)
}

struct Reader<R> {
    inner: R,
    offset: u64,
    path: String,
}

/// A metadata value the reader keeps.
enum Kept {
    Number(u64),
    Text(String),
    Skipped,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut buffer = [0u8; N];
        match self.inner.read_exact(&mut buffer) {
            Ok(()) => {
                self.offset += N as u64;
                Ok(buffer)
            }
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(GgufError::Truncated {
                    what,
                    offset: self.offset,
                })
            }
            Err(source) => Err(GgufError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    fn skip(&mut self, count: u64, what: &'static str, file_bytes: u64) -> Result<(), GgufError> {
        let target = self.offset.saturating_add(count);
        if target > file_bytes {
            return Err(GgufError::Truncated {
                what,
                offset: file_bytes,
            });
        }
        let step = i64::try_from(count).map_err(|_| GgufError::TooLarge {
            what,
            value: count,
            limit: i64::MAX as u64,
        })?;
        self.inner
            .seek_relative(step)
            .map_err(|source| GgufError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.offset = target;
        Ok(())
    }

    fn limited(what: &'static str, value: u64, limit: u64) -> Result<u64, GgufError> {
        if value > limit {
            Err(GgufError::TooLarge { what, value, limit })
        } else {
            Ok(value)
        }
    }

    fn string(&mut self, what: &'static str, file_bytes: u64) -> Result<String, GgufError> {
        let length = Self::limited(what, self.u64(what)?, MAX_STRING_BYTES)?;
        if self.offset.saturating_add(length) > file_bytes {
            return Err(GgufError::Truncated {
                what,
                offset: file_bytes,
            });
        }
        let mut buffer = vec![0u8; length as usize];
        self.inner
            .read_exact(&mut buffer)
            .map_err(|source| GgufError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.offset += length;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    fn skip_string(&mut self, what: &'static str, file_bytes: u64) -> Result<(), GgufError> {
        let length = Self::limited(what, self.u64(what)?, MAX_STRING_BYTES)?;
        self.skip(length, what, file_bytes)
    }

    /// Reads one metadata value of `value_type`, keeping integers and short strings.
    fn value(&mut self, key: &str, value_type: u32, file_bytes: u64) -> Result<Kept, GgufError> {
        const WHAT: &str = "a metadata value";
        let kept = match value_type {
            0 => Kept::Number(u64::from(self.bytes::<1>(WHAT)?[0])),
            1 => Kept::Number(i8::from_le_bytes(self.bytes::<1>(WHAT)?).max(0) as u64),
            2 => Kept::Number(u64::from(u16::from_le_bytes(self.bytes::<2>(WHAT)?))),
            3 => Kept::Number(i16::from_le_bytes(self.bytes::<2>(WHAT)?).max(0) as u64),
            4 => Kept::Number(u64::from(self.u32(WHAT)?)),
            5 => Kept::Number(i32::from_le_bytes(self.bytes::<4>(WHAT)?).max(0) as u64),
            6 => {
                self.bytes::<4>(WHAT)?;
                Kept::Skipped
            }
            7 => {
                self.bytes::<1>(WHAT)?;
                Kept::Skipped
            }
            8 => {
                if key.starts_with("general.") {
                    Kept::Text(self.string(WHAT, file_bytes)?)
                } else {
                    self.skip_string(WHAT, file_bytes)?;
                    Kept::Skipped
                }
            }
            9 => return self.array(key, file_bytes),
            10 => Kept::Number(self.u64(WHAT)?),
            11 => Kept::Number(i64::from_le_bytes(self.bytes::<8>(WHAT)?).max(0) as u64),
            12 => {
                self.bytes::<8>(WHAT)?;
                Kept::Skipped
            }
            other => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_string(),
                    value_type: other,
                });
            }
        };
        Ok(kept)
    }

    /// Reads an array: keeps its length for the tokenizer's token list and its largest entry
    /// for integer arrays (per-layer head counts); skips everything else.
    fn array(&mut self, key: &str, file_bytes: u64) -> Result<Kept, GgufError> {
        const WHAT: &str = "a metadata array";
        let item_type = self.u32(WHAT)?;
        let count = Self::limited(WHAT, self.u64(WHAT)?, MAX_ARRAY_ITEMS)?;
        if key == "tokenizer.ggml.tokens" {
            for _ in 0..count {
                if item_type == 8 {
                    self.skip_string(WHAT, file_bytes)?;
                } else {
                    self.value(key, item_type, file_bytes)?;
                }
            }
            return Ok(Kept::Number(count));
        }
        let fixed = match item_type {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match (fixed, item_type) {
            (Some(_), 0..=5 | 10 | 11) if count <= 4096 => {
                let mut largest = 0;
                for _ in 0..count {
                    if let Kept::Number(n) = self.value(key, item_type, file_bytes)? {
                        largest = largest.max(n);
                    }
                }
                Ok(if count == 0 {
                    Kept::Skipped
                } else {
                    Kept::Number(largest)
                })
            }
            (Some(size), _) => {
                self.skip(count.saturating_mul(size), WHAT, file_bytes)?;
                Ok(Kept::Skipped)
            }
            (None, _) => {
                for _ in 0..count {
                    self.value(key, item_type, file_bytes)?;
                }
                Ok(Kept::Skipped)
            }
        }
    }

    fn header(&mut self, file_bytes: u64) -> Result<GgufInfo, GgufError> {
        let magic = self.bytes::<4>("the magic number")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(&magic).escape_default().to_string(),
            });
        }
        let version = self.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = Self::limited(
            "the tensor count",
            self.u64("the tensor count")?,
            MAX_TENSORS,
        )?;
        let metadata_count = Self::limited(
            "the metadata count",
            self.u64("the metadata count")?,
            MAX_METADATA_ENTRIES,
        )?;
        let mut numbers: BTreeMap<String, u64> = BTreeMap::new();
        let mut texts: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = self.string("a metadata key", file_bytes)?;
            let value_type = self.u32("a metadata value type")?;
            match self.value(&key, value_type, file_bytes)? {
                Kept::Number(n) => {
                    numbers.insert(key, n);
                }
                Kept::Text(text) => {
                    texts.insert(key, text);
                }
                Kept::Skipped => {}
            }
        }
        let mut data_end: Option<u64> = Some(0);
        for _ in 0..tensor_count {
            let name = self.string("a tensor name", file_bytes)?;
            let dims = self.u32("a tensor's dimension count")?;
            if dims > MAX_DIMS {
                return Err(GgufError::TooLarge {
                    what: "a tensor's dimension count",
                    value: u64::from(dims),
                    limit: u64::from(MAX_DIMS),
                });
            }
            let mut elements: u64 = 1;
            for _ in 0..dims {
                elements = elements.saturating_mul(self.u64("a tensor dimension")?);
            }
            let tensor_type = self.u32("a tensor type")?;
            let offset = self.u64("a tensor offset")?;
            let size = match tensor_block(tensor_type) {
                Some((block, bytes)) => {
                    if !elements.is_multiple_of(block) {
                        return Err(GgufError::BadTensorShape {
                            name,
                            elements,
                            block,
                        });
                    }
                    Some((elements / block).saturating_mul(bytes))
                }
                None => None,
            };
            data_end = match (data_end, size) {
                (Some(end), Some(size)) => Some(end.max(offset.saturating_add(size))),
                _ => None,
            };
        }
        let alignment = numbers
            .get("general.alignment")
            .copied()
            .filter(|a| *a > 0)
            .unwrap_or(32);
        let data_offset = self.offset.div_ceil(alignment).saturating_mul(alignment);
        if let Some(end) = data_end {
            let needed = data_offset.saturating_add(end);
            if needed > file_bytes {
                return Err(GgufError::DataTruncated {
                    needed,
                    actual: file_bytes,
                });
            }
        }
        let architecture = texts.get("general.architecture").cloned();
        let arch_number = |suffix: &str| -> Option<u64> {
            let arch = architecture.as_deref()?;
            numbers.get(&format!("{arch}.{suffix}")).copied()
        };
        Ok(GgufInfo {
            version,
            tensor_count,
            metadata_count,
            name: texts.get("general.name").cloned(),
            block_count: arch_number("block_count"),
            embedding_length: arch_number("embedding_length"),
            head_count: arch_number("attention.head_count"),
            head_count_kv: arch_number("attention.head_count_kv"),
            key_length: arch_number("attention.key_length"),
            value_length: arch_number("attention.value_length"),
            context_length: arch_number("context_length"),
            vocab_size: numbers.get("tokenizer.ggml.tokens").copied(),
            architecture,
            file_bytes,
            data_offset,
            tensor_data_bytes: data_end,
        })
    }
}

/// ggml tensor types: (elements per block, bytes per block). `None` for types this reader
/// does not know, whose size is then not checked.
fn tensor_block(tensor_type: u32) -> Option<(u64, u64)> {
    Some(match tensor_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// Writes small, valid GGUF files with the metadata Ray reads and F32 tensors of the given
/// sizes (zeros), for tests and demonstrations.
///
/// ```
/// use ray_runtime::footprint::gguf::{GgufBuilder, read_header};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.gguf");
/// GgufBuilder::llama(4, 256, 8, 2).tensor("w", 1024).write(&path)?;
/// let info = read_header(&path)?;
/// assert_eq!(info.block_count, Some(4));
/// assert_eq!(info.kv_bytes_per_token(), Some(4 * 2 * (32 + 32) * 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufBuilder {
    numbers: Vec<(String, u32)>,
    texts: Vec<(String, String)>,
    tokens: usize,
    tensors: Vec<(String, u64)>,
}

impl GgufBuilder {
    /// A llama-architecture header: `layers` blocks, embedding `embd`, `heads` attention heads
    /// of which `kv_heads` are KV heads, a context of 4096 and a 16-token vocabulary.
    pub fn llama(layers: u32, embd: u32, heads: u32, kv_heads: u32) -> GgufBuilder {
        GgufBuilder {
            numbers: vec![
                ("llama.block_count".into(), layers),
                ("llama.embedding_length".into(), embd),
                ("llama.attention.head_count".into(), heads),
                ("llama.attention.head_count_kv".into(), kv_heads),
                ("llama.context_length".into(), 4096),
            ],
            texts: vec![
                ("general.architecture".into(), "llama".into()),
                ("general.name".into(), "ray-test".into()),
            ],
            tokens: 16,
            tensors: Vec::new(),
        }
    }

    /// Sets a 32-bit metadata number, e.g. `llama.context_length`.
    pub fn number(mut self, key: &str, value: u32) -> GgufBuilder {
        self.numbers.retain(|(k, _)| k != key);
        self.numbers.push((key.into(), value));
        self
    }

    /// Adds an F32 tensor of `elements` elements.
    pub fn tensor(mut self, name: &str, elements: u64) -> GgufBuilder {
        self.tensors.push((name.into(), elements));
        self
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, text: &str) {
            out.extend_from_slice(&(text.len() as u64).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let entries = self.numbers.len() + self.texts.len() + 1;
        out.extend_from_slice(&(entries as u64).to_le_bytes());
        for (key, text) in &self.texts {
            string(&mut out, key);
            out.extend_from_slice(&8u32.to_le_bytes());
            string(&mut out, text);
        }
        for (key, value) in &self.numbers {
            string(&mut out, key);
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(self.tokens as u64).to_le_bytes());
        for index in 0..self.tokens {
            string(&mut out, &format!("t{index}"));
        }
        let mut offset = 0u64;
        for (name, elements) in &self.tensors {
            string(&mut out, name);
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&elements.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (elements * 4).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.resize(out.len() + offset as usize, 0);
        out
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.bytes())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_built_file_reads_back_with_its_numbers() {
        let bytes = GgufBuilder::llama(24, 896, 14, 2)
            .tensor("a", 4096)
            .tensor("b", 100)
            .bytes();
        let (_dir, path) = write(&bytes);
        let info = read_header(&path).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.architecture.as_deref(), Some("llama"));
        assert_eq!(info.block_count, Some(24));
        assert_eq!(info.head_count_kv, Some(2));
        assert_eq!(info.vocab_size, Some(16));
        assert_eq!(info.tensor_count, 2);
        // Qwen2.5-0.5B's shape: 24 layers, 2 KV heads of 64: 12 KiB per token.
        assert_eq!(info.kv_bytes_per_token(), Some(12 * 1024));
        assert_eq!(info.file_bytes, bytes.len() as u64);
    }

    #[test]
    fn a_truncated_file_is_refused_with_the_sizes() {
        let bytes = GgufBuilder::llama(2, 64, 4, 4).tensor("a", 4096).bytes();
        let (_dir, path) = write(&bytes[..bytes.len() - 100]);
        let error = read_header(&path).unwrap_err();
        assert!(
            matches!(error, GgufError::DataTruncated { needed, actual }
                if needed == bytes.len() as u64 && actual == needed - 100),
            "{error}"
        );
        // Cut inside the metadata.
        let (_dir, path) = write(&bytes[..60]);
        assert!(matches!(
            read_header(&path).unwrap_err(),
            GgufError::Truncated { .. }
        ));
    }

    #[test]
    fn foreign_files_and_versions_are_refused() {
        let (_dir, path) = write(b"\x7fELF\x02\x01\x01\0\0\0\0\0");
        let error = read_header(&path).unwrap_err();
        assert!(matches!(error, GgufError::BadMagic { .. }), "{error}");
        assert!(error.to_string().contains("ELF"), "{error}");
        let mut bytes = GgufBuilder::llama(2, 64, 4, 4).bytes();
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let (_dir, path) = write(&bytes);
        assert!(matches!(
            read_header(&path).unwrap_err(),
            GgufError::UnsupportedVersion(1)
        ));
        let (_dir, path) = write(b"GG");
        assert!(matches!(
            read_header(&path).unwrap_err(),
            GgufError::Truncated { .. }
        ));
    }

    #[test]
    fn absurd_counts_are_refused_without_allocating() {
        let mut bytes = GgufBuilder::llama(2, 64, 4, 4).bytes();
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let (_dir, path) = write(&bytes);
        assert!(matches!(
            read_header(&path).unwrap_err(),
            GgufError::TooLarge { .. }
        ));
    }
}
