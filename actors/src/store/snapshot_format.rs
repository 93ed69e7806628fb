//! The stream format of backups and tenant exports (docs/operations.md "Backup and restore").
//!
//! ```text
//! "STWDSNAP" · u16 format version · u32 header length · header (JSON)
//! records:  0x01 tree   · u16 name length · name          (entries below go to this tree)
//!           0x02 entry  · u32 key length · key · u32 value length · value
//!           0x03 file   · u16 path length · path · u64 length · bytes   (a file of the data dir)
//! 0xFF end · u64 entries · u64 files · u64 id floor · SHA-256 of every byte before the digest
//! ```
//! All integers big-endian. A reader refuses a stream whose digest does not match, so a
//! truncated or damaged file is never taken for a whole one; it learns that only at the end,
//! so whoever restores writes into a place it can throw away.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

pub const MAGIC: &[u8; 8] = b"STWDSNAP";
pub const FORMAT_VERSION: u16 = 1;
const TAG_TREE: u8 = 0x01;
const TAG_ENTRY: u8 = 0x02;
const TAG_FILE: u8 = 0x03;
const TAG_END: u8 = 0xFF;
/// A header larger than this is not one of ours.
const HEADER_BYTES_MAX: u32 = 1024 * 1024;
/// A stored value is at most 64 MiB (`codec.rs`); a larger length is damage, refused before
/// anything is allocated for it.
const ITEM_BYTES_MAX: u32 = 64 * 1024 * 1024 + 1024;

/// What a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// The whole store (`POST /v1/backup`).
    Backup,
    /// One tenant: its registry record, then its key space with tenant-relative keys.
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub kind: SnapshotKind,
    pub created_at_ms: u64,
    /// The Steward version that wrote it.
    pub steward_version: String,
    /// The tenant of a [`SnapshotKind::Tenant`] stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Counts of a finished stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotCounts {
    pub entries: u64,
    pub files: u64,
    /// Bytes of the stream.
    pub bytes: u64,
    /// Every sequence number in the copied data is below this (taken after the copy): a
    /// store that takes the data moves its own sequence past it, so new entries never reuse
    /// a key.
    pub id_floor: u64,
}

fn format_error(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(format!("not a readable Steward backup: {detail}"))
}

fn write_error(err: std::io::Error) -> StoreError {
    StoreError::Io(format!("cannot write the backup stream: {err}"))
}

/// Writes a stream; every byte goes through the digest.
pub struct SnapshotWriter<W: Write> {
    out: W,
    digest: Sha256,
    counts: SnapshotCounts,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn start(out: W, header: &SnapshotHeader) -> Result<SnapshotWriter<W>, StoreError> {
        let mut writer = SnapshotWriter {
            out,
            digest: Sha256::new(),
            counts: SnapshotCounts::default(),
        };
        let header = serde_json::to_vec(header)
            .map_err(|err| StoreError::Codec(format!("backup header: {err}")))?;
        writer.put(MAGIC)?;
        writer.put(&FORMAT_VERSION.to_be_bytes())?;
        writer.put(&(header.len() as u32).to_be_bytes())?;
        writer.put(&header)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.digest.update(bytes);
        self.counts.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(write_error)
    }

    fn put_short(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u16::try_from(bytes.len()).map_err(|_| format_error("a name over 64 KiB"))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }

    fn put_long(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|len| *len <= ITEM_BYTES_MAX)
            .ok_or_else(|| format_error("an item over 64 MiB"))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }

    /// Entries after this go to tree `name`.
    pub fn tree(&mut self, name: &[u8]) -> Result<(), StoreError> {
        self.put(&[TAG_TREE])?;
        self.put_short(name)
    }

    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&[TAG_ENTRY])?;
        self.put_long(key)?;
        self.put_long(value)?;
        self.counts.entries += 1;
        Ok(())
    }

    /// A file of the data dir (`path` relative to it, `/`-separated), `len` bytes from `body`.
    pub fn file(&mut self, path: &str, len: u64, body: &mut impl Read) -> Result<(), StoreError> {
        self.put(&[TAG_FILE])?;
        self.put_short(path.as_bytes())?;
        self.put(&len.to_be_bytes())?;
        let mut left = len;
        let mut buffer = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let read = body
                .read(&mut buffer[..want])
                .map_err(|err| StoreError::Io(format!("cannot read {path}: {err}")))?;
            if read == 0 {
                return Err(StoreError::Io(format!("{path} shrank while it was copied")));
            }
            self.put(&buffer[..read])?;
            left -= read as u64;
        }
        self.counts.files += 1;
        Ok(())
    }

    /// Sets the id floor the end record carries (the store, after its copy).
    pub fn set_id_floor(&mut self, id_floor: u64) {
        self.counts.id_floor = id_floor;
    }

    /// Writes the end record and the digest; returns the output and the counts.
    pub fn finish(mut self) -> Result<(W, SnapshotCounts), StoreError> {
        self.put(&[TAG_END])?;
        self.put(&self.counts.entries.to_be_bytes())?;
        self.put(&self.counts.files.to_be_bytes())?;
        self.put(&self.counts.id_floor.to_be_bytes())?;
        let digest = self.digest.finalize_reset();
        self.out.write_all(&digest).map_err(write_error)?;
        self.out.flush().map_err(write_error)?;
        self.counts.bytes += digest.len() as u64;
        Ok((self.out, self.counts))
    }
}

/// One record read from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotItem {
    Tree(Vec<u8>),
    Entry(Vec<u8>, Vec<u8>),
    /// Read its bytes with [`SnapshotReader::copy_file`] before the next item.
    File {
        path: String,
        len: u64,
    },
    /// The digest matched: the stream is whole.
    End(SnapshotCounts),
}

/// Reads a stream, checking the digest at its end.
pub struct SnapshotReader<R: Read> {
    input: R,
    digest: Sha256,
    counts: SnapshotCounts,
    header: SnapshotHeader,
    /// Bytes of the current file record not yet copied.
    file_left: u64,
    ended: bool,
}

impl<R: Read> SnapshotReader<R> {
    pub fn open(input: R) -> Result<SnapshotReader<R>, StoreError> {
        let mut reader = SnapshotReader {
            input,
            digest: Sha256::new(),
            counts: SnapshotCounts::default(),
            header: SnapshotHeader {
                kind: SnapshotKind::Backup,
                created_at_ms: 0,
                steward_version: String::new(),
                tenant: None,
            },
            file_left: 0,
            ended: false,
        };
        let magic: [u8; 8] = reader.take_array()?;
        if &magic != MAGIC {
            return Err(format_error("it does not start with STWDSNAP"));
        }
        let version = u16::from_be_bytes(reader.take_array()?);
        if version != FORMAT_VERSION {
            return Err(format_error(format!(
                "format version {version}; this Steward reads version {FORMAT_VERSION}"
            )));
        }
        let len = u32::from_be_bytes(reader.take_array()?);
        if len > HEADER_BYTES_MAX {
            return Err(format_error("its header is too large"));
        }
        let header = reader.take_vec(len as usize)?;
        reader.header = serde_json::from_slice(&header)
            .map_err(|err| format_error(format!("header: {err}")))?;
        Ok(reader)
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    fn take(&mut self, buffer: &mut [u8]) -> Result<(), StoreError> {
        self.input.read_exact(buffer).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                format_error("it ends early (truncated)")
            } else {
                StoreError::Io(format!("cannot read the backup: {err}"))
            }
        })?;
        self.digest.update(&*buffer);
        self.counts.bytes += buffer.len() as u64;
        Ok(())
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut bytes = [0u8; N];
        self.take(&mut bytes)?;
        Ok(bytes)
    }

    fn take_vec(&mut self, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut bytes = vec![0u8; len];
        self.take(&mut bytes)?;
        Ok(bytes)
    }

    fn take_short(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = u16::from_be_bytes(self.take_array()?);
        self.take_vec(usize::from(len))
    }

    fn take_long(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = u32::from_be_bytes(self.take_array()?);
        if len > ITEM_BYTES_MAX {
            return Err(format_error("an item length beyond any stored value"));
        }
        self.take_vec(len as usize)
    }

    /// The next record; after [`SnapshotItem::End`] the stream is known whole.
    pub fn next_item(&mut self) -> Result<SnapshotItem, StoreError> {
        if self.ended {
            return Err(format_error("read past its end"));
        }
        if self.file_left > 0 {
            std::io::copy(&mut FileBody { reader: self }, &mut std::io::sink())
                .map_err(|err| StoreError::Io(format!("cannot read the backup: {err}")))?;
        }
        let [tag] = self.take_array()?;
        match tag {
            TAG_TREE => Ok(SnapshotItem::Tree(self.take_short()?)),
            TAG_ENTRY => {
                let key = self.take_long()?;
                let value = self.take_long()?;
                self.counts.entries += 1;
                Ok(SnapshotItem::Entry(key, value))
            }
            TAG_FILE => {
                let path = String::from_utf8(self.take_short()?)
                    .map_err(|_| format_error("a file name that is not UTF-8"))?;
                let len = u64::from_be_bytes(self.take_array()?);
                self.file_left = len;
                self.counts.files += 1;
                Ok(SnapshotItem::File { path, len })
            }
            TAG_END => {
                let entries = u64::from_be_bytes(self.take_array()?);
                let files = u64::from_be_bytes(self.take_array()?);
                self.counts.id_floor = u64::from_be_bytes(self.take_array()?);
                let expected = self.digest.finalize_reset();
                let mut found = [0u8; 32];
                self.input
                    .read_exact(&mut found)
                    .map_err(|_| format_error("it ends before its digest (truncated)"))?;
                if found[..] != expected[..] {
                    return Err(format_error("its SHA-256 digest does not match (damaged)"));
                }
                let mut extra = [0u8; 1];
                if matches!(self.input.read(&mut extra), Ok(n) if n > 0) {
                    return Err(format_error("bytes follow its end"));
                }
                if entries != self.counts.entries || files != self.counts.files {
                    return Err(format_error("its counts do not match its records"));
                }
                self.ended = true;
                self.counts.bytes += 32;
                Ok(SnapshotItem::End(self.counts))
            }
            other => Err(format_error(format!("unknown record tag {other:#04x}"))),
        }
    }

    /// Copies the body of the file record just read into `out`.
    pub fn copy_file(&mut self, out: &mut impl Write) -> Result<u64, StoreError> {
        std::io::copy(&mut FileBody { reader: self }, out)
            .map_err(|err| StoreError::Io(format!("cannot copy a file of the backup: {err}")))
    }
}

/// The rest of the current file record, as a reader.
struct FileBody<'a, R: Read> {
    reader: &'a mut SnapshotReader<R>,
}

impl<R: Read> Read for FileBody<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let left = self.reader.file_left;
        if left == 0 {
            return Ok(0);
        }
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.reader.input.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the backup ends inside a file (truncated)",
            ));
        }
        self.reader.digest.update(&buffer[..read]);
        self.reader.counts.bytes += read as u64;
        self.reader.file_left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            kind: SnapshotKind::Backup,
            created_at_ms: 1,
            steward_version: "test".into(),
            tenant: None,
        }
    }

    fn sample() -> Vec<u8> {
        let mut writer = SnapshotWriter::start(Vec::new(), &header()).unwrap();
        writer.tree(b"t").unwrap();
        writer.entry(b"k1", b"v1").unwrap();
        writer.entry(b"k2", &[0u8; 1000]).unwrap();
        writer
            .file("backfills/a/b.csv", 5, &mut &b"hello"[..])
            .unwrap();
        writer.entry(b"k3", b"").unwrap();
        writer.set_id_floor(42);
        writer.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<SnapshotItem>, StoreError> {
        let mut reader = SnapshotReader::open(bytes)?;
        let mut items = Vec::new();
        loop {
            let item = reader.next_item()?;
            let file = matches!(item, SnapshotItem::File { .. });
            let end = matches!(item, SnapshotItem::End(_));
            items.push(item);
            if file {
                let mut body = Vec::new();
                reader.copy_file(&mut body)?;
                items.push(SnapshotItem::Entry(b"body".to_vec(), body));
            }
            if end {
                return Ok(items);
            }
        }
    }

    #[test]
    fn a_stream_reads_back_record_for_record() {
        // Goal: what the writer wrote, the reader returns in order, ending with matching counts.
        let bytes = sample();
        assert_eq!(
            SnapshotReader::open(&bytes[..]).unwrap().header(),
            &header()
        );
        let items = read_all(&bytes).unwrap();
        assert_eq!(items[0], SnapshotItem::Tree(b"t".to_vec()));
        assert_eq!(
            items[1],
            SnapshotItem::Entry(b"k1".to_vec(), b"v1".to_vec())
        );
        assert_eq!(
            items[3],
            SnapshotItem::File {
                path: "backfills/a/b.csv".into(),
                len: 5
            }
        );
        assert_eq!(
            items[4],
            SnapshotItem::Entry(b"body".to_vec(), b"hello".to_vec())
        );
        assert_eq!(items[5], SnapshotItem::Entry(b"k3".to_vec(), Vec::new()));
        let SnapshotItem::End(counts) = items[6] else {
            panic!("no end: {items:?}");
        };
        assert_eq!((counts.entries, counts.files, counts.id_floor), (3, 1, 42));
        assert_eq!(counts.bytes, bytes.len() as u64);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        // Goal: no prefix of a stream and no single damaged byte reads as a whole stream.
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(read_all(&damaged).is_err(), "flip at {at} was accepted");
        }
    }

    #[test]
    fn a_skipped_file_body_keeps_the_stream_readable() {
        // Goal: a reader that does not want a file's bytes still reaches the end intact.
        let bytes = sample();
        let mut reader = SnapshotReader::open(&bytes[..]).unwrap();
        let mut ends = 0;
        loop {
            match reader.next_item().unwrap() {
                SnapshotItem::End(_) => {
                    ends += 1;
                    break;
                }
                _ => continue,
            }
        }
        assert_eq!(ends, 1);
    }
}
